"""`ferrule.request_id` as an app sees it: `/keep` keeps the request's id str (in a list
and as a set member); every route answers the id and what was kept, as JSON."""
import json

kept = []
members = set()


def app(environ, start_response):
    rid = environ["ferrule.request_id"]
    if environ["PATH_INFO"] == "/keep":
        kept.append(rid)
        members.add(rid)
    body = json.dumps({"id": rid, "kept": kept, "members": all(k in members for k in kept)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
