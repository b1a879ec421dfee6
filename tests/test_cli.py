"""The command line (mirrors python/ferrule/cli.py): flags, app targets and errors."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import APPS, free_port, wait_for_port


def ferrule(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "ferrule", *args], capture_output=True, text=True, timeout=timeout)


def test_version():
    r = ferrule("--version")
    assert r.returncode == 0 and r.stdout.startswith("ferrule ")


def test_an_unknown_flag_is_one_line_naming_the_closest_flag_and_exits_2():
    r = ferrule("--no-such-flag", "routes:app")
    assert r.returncode == 2
    assert r.stderr == "ferrule: error: unrecognized arguments: --no-such-flag (`ferrule --help` lists the flags)\n"
    r = ferrule("routes:app", "--wrkers=2")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "ferrule: error: unrecognized arguments: --wrkers=2 (did you mean --workers?)"], r.stderr


@pytest.mark.parametrize("args, words", [
    (["--threads", "0"], "threads must be an integer >= 1"),
    (["-b", "127.0.0.1:notaport"], "is not a number"),
    (["--keep-alive", "-1"], "must be >= 0"),
    (["--keep-alive", "1e300"], "keep-alive must be a number of seconds >= 0, at most 18446744073709551615"),
    (["--graceful-timeout", "1e20"], "graceful-timeout must be a number of seconds >= 0, at most"),
    (["--header-map", "maybe"], "invalid choice"),
    (["--env", "NOEQUALS"], "expected KEY=VALUE"),
    (["--workers", "0"], "workers must be an integer >= 1"),
    (["--workers", "99999999999999999999"], "must be an integer from 0 to 9223372036854775807"),
    (["--access-logfile", "-", "--access-logformat", "%(zz)s"], "unknown atom %(zz)s"),
])
def test_bad_values_get_one_line_and_exit_2(args, words):
    r = ferrule("routes:app", "--chdir", str(APPS), *args)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr


@pytest.mark.parametrize("target, words", [
    ("no_such_module:app", "ModuleNotFoundError"),
    ("routes:missing", "Failed to find attribute 'missing' in 'routes'"),
    ("routes:not_callable", "must be callable"),
    ("routes:factory(1 + x)", "only literal values"),
    ("broken_app:app", "ZeroDivisionError"),
])
def test_app_load_errors_exit_4_with_a_clear_line(target, words, tmp_path):
    (tmp_path / "broken_app.py").write_text("x = 1 / 0\n")
    r = ferrule(target, "--chdir", str(APPS), "--pythonpath", str(tmp_path))
    assert r.returncode == 4, r.stderr
    assert words in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("ferrule: error:")


def test_port_in_use_says_so_and_exits_3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = ferrule("routes:app", "--chdir", str(APPS), "-b", f"127.0.0.1:{port}")
    assert r.returncode == 3
    assert "address already in use" in r.stderr


@pytest.mark.parametrize("target, body", [
    ("routes", b"Hello, World!"),                        # MODULE -> "application"
    ("routes:app", b"Hello, World!"),
    ("routes:factory()", b"factory"),
    ("routes:factory('custom')", b"custom"),
    ("routes:factory(greeting='kw')", b"kw"),
])
def test_app_targets(target, body, serve):
    s = serve(target)
    with socket.create_connection(("127.0.0.1", s.port)) as c:
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    assert data.endswith(body)


def test_env_flag_sets_environment_for_the_app(serve, tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    s = serve("routes:app", "-e", f"FERRULE_TEST_FILE={f}")
    with socket.create_connection(("127.0.0.1", s.port)) as c:
        c.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    assert data.endswith(b"\r\n\r\nabc")


def test_python_m_and_console_script_are_the_same(tmp_path):
    # The console script pip installed beside this interpreter (the venv need not be on PATH).
    script = Path(sys.executable).parent / "ferrule"
    port = free_port()
    p = subprocess.Popen([str(script), "routes:app", "--chdir", str(APPS), "-b", f"127.0.0.1:{port}"],
                         stderr=subprocess.PIPE)
    try:
        wait_for_port(port, p)
    finally:
        p.terminate()
        assert p.wait(10) == 0
