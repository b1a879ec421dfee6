"""`-b unix:PATH`: only a stale socket is replaced; a live one, a file or a directory at
PATH stops the start with one line and exit 3, and nothing is deleted."""

import signal
import socket
import subprocess
import sys

from conftest import APPS, parse, wait_until

EXIT_BIND = 3


def start(sock, *args):
    return subprocess.Popen([sys.executable, "-m", "ferrule", "routes:app", "--chdir", str(APPS),
                             "-b", f"unix:{sock}", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def hello(sock):
    with socket.socket(socket.AF_UNIX) as u:
        u.settimeout(10)
        u.connect(str(sock))
        u.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := u.recv(4096):
            data += chunk
    return parse(data)[2]


def answers(sock):
    try:
        return hello(sock) == b"Hello, World!"
    except OSError:
        return False


def refused(sock):
    p = start(sock)
    err = p.communicate(timeout=20)[1].decode()
    return p.returncode, err


def test_a_regular_file_at_the_path_is_kept_and_the_start_refused(tmp_path):
    path = tmp_path / "data.sock"
    path.write_bytes(b"precious")
    code, err = refused(path)
    assert code == EXIT_BIND, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "a regular file, not a socket" in lines[0], err
    assert path.read_bytes() == b"precious"


def test_a_directory_at_the_path_is_kept_and_the_start_refused(tmp_path):
    path = tmp_path / "dir"
    path.mkdir()
    (path / "inside").write_text("x")
    code, err = refused(path)
    assert code == EXIT_BIND, err
    assert len(err.strip().splitlines()) == 1 and "a directory, not a socket" in err, err
    assert (path / "inside").read_text() == "x"


def test_a_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "f.sock"
    gone = socket.socket(socket.AF_UNIX)
    gone.bind(str(path))
    gone.close()  # the file stays, nobody listens
    p = start(path)
    try:
        wait_until(lambda: p.poll() is not None or answers(path))
        assert p.poll() is None, p.stderr.read().decode()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(15)
    assert not path.exists()


def test_a_live_server_on_the_socket_is_left_serving(tmp_path):
    path = tmp_path / "f.sock"
    first = start(path)
    try:
        wait_until(lambda: first.poll() is not None or answers(path))
        code, err = refused(path)
        assert code == EXIT_BIND, err
        assert len(err.strip().splitlines()) == 1 and "address already in use" in err, err
        assert hello(path) == b"Hello, World!"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(15)
