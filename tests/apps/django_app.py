"""A single-file Django project."""


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
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402


def index(request):
    return HttpResponse("Hello from Django")


@csrf_exempt
def echo(request):
    return JsonResponse({"method": request.method, "body": request.body.decode(), "host": request.get_host(),
                         "query": request.GET.get("q"), "secure": request.is_secure()})


def item(request, item_id):
    return JsonResponse({"id": item_id, "path": request.path})


def stream(request):
    return StreamingHttpResponse((f"part {i};" for i in range(3)))


def boom(request):
    raise RuntimeError("django secret")


urlpatterns = [
    path("", index),
    path("echo", echo),
    path("items/<int:item_id>", item),
    path("stream", stream),
    path("boom", boom),
]

application = get_wsgi_application()
