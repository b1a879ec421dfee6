"""A single-file Django project for the front-server tests (`tests/e2e/test_uwsgi_nginx.py`):
the same routes as `front_flask.py`, with `reverse` and `build_absolute_uri`."""

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="ferrule-tests",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path, re_path, reverse  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from front_parts import DOWNLOAD, blocks, cue, environ_strings, hash_stream  # noqa: E402


def index(request):
    url = reverse("item", args=[7])
    return JsonResponse({"url": url, "external": request.build_absolute_uri(url), "path_info": request.path_info,
                         "script_root": request.path[:-len(request.path_info)]})


def item(request, item_id):
    return JsonResponse({"id": item_id, "path_info": request.path_info,
                         "script_root": request.path[:-len(request.path_info)]})


@csrf_exempt
def env(request, rest=""):
    return JsonResponse(environ_strings(request.META))


@csrf_exempt
def upload(request):
    return JsonResponse(hash_stream(request.read))


def stream(request, key):
    return StreamingHttpResponse(blocks(key), content_type="text/plain")


@csrf_exempt
def release(request, key):
    cue(key).set()
    return HttpResponse("released")


def download(request):
    return FileResponse(open(DOWNLOAD, "rb"), content_type="application/octet-stream")  # wsgi.file_wrapper


def boom(request):
    raise RuntimeError("django secret")


urlpatterns = [
    path("", index),
    path("items/<int:item_id>", item, name="item"),
    re_path(r"^env/(?P<rest>.*)$", env),
    path("upload", upload),
    path("stream/<str:key>", stream),
    path("release/<str:key>", release),
    path("download", download),
    path("boom", boom),
]

application = get_wsgi_application()
