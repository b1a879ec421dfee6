"""A reused environ's `ferrule.request_id` str is refilled in place only when no one else
holds it (`sys::refill_ascii`): an id the app kept never changes under it, and every
request still gets a new one."""
import http.client
import json


def test_a_kept_request_id_never_changes_and_every_request_gets_its_own(serve, tmp_path):
    s = serve("request_id_app:app", "--threads", "1", "--access-logfile", str(tmp_path / "access.log"),
              "--access-logformat", "%(request_id)s")
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:
        ids, keeps = [], []
        # One keep-alive connection, one thread: the same environ is built on each time.
        for path in ["/", "/", "/keep", "/", "/", "/keep", "/keep", "/", "/"]:
            c.request("GET", path)
            got = json.loads(c.getresponse().read())
            ids.append(got["id"])
            if path == "/keep":
                keeps.append(got["id"])
            assert got["kept"] == keeps, "a kept id changed"
            assert got["members"], "a kept id's hash changed"
    finally:
        c.close()
    assert len(set(ids)) == len(ids), ids
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids), ids
    s.stop()
    logged = (tmp_path / "access.log").read_text().split()
    assert logged == ids
