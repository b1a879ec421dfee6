"""The app bench/egress.py measures connects with: GET /connect?kind=python|native&port=P&n=N
makes N TCP connects to 127.0.0.1:P one after another (each closed at once) and answers
"<wall seconds> <process CPU seconds>" spent in the loop. CPU is the whole process's, so it
includes the egress supervisor thread's work for these connects."""

import ctypes
import socket
import time
from urllib.parse import parse_qs

libc = ctypes.CDLL(None, use_errno=True)


class SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("addr", ctypes.c_ubyte * 4),
                ("zero", ctypes.c_ubyte * 8)]


def python_connects(port, n):
    for _ in range(n):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        s.close()


def native_connects(port, n):
    sa = SockaddrIn()
    sa.family, sa.port = socket.AF_INET, socket.htons(port)
    sa.addr[:] = [127, 0, 0, 1]
    size = ctypes.sizeof(sa)
    for _ in range(n):
        fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
        rc = libc.connect(fd, ctypes.byref(sa), size)
        err = ctypes.get_errno()
        libc.close(fd)
        if rc:
            raise OSError(err, "connect")


def app(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    run = native_connects if q.get("kind") == "native" else python_connects
    port, n = int(q["port"]), int(q["n"])
    wall, cpu = time.perf_counter(), time.process_time()
    run(port, n)
    body = f"{time.perf_counter() - wall} {time.process_time() - cpu}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
