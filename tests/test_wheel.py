"""The wheel `make wheel` builds installs and serves where there is no Rust toolchain."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import free_port, get, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
# A PATH a server without Rust would have: the venv, then the system's directories only.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

APP = '''
def app(environ, start_response):
    import ferrule
    body = ("from the wheel: " + ferrule.__file__).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def this_pythons_wheel() -> Path:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted((ROOT / "dist").glob(f"ferrule-*-{tag}-*.whl"))
    assert found, f"no wheel for {tag} in {ROOT / 'dist'}: run `make wheel` first"
    assert len(found) == 1, f"several wheels for {tag}: {found}"
    return found[0]


def test_the_wheel_installs_and_serves_without_cargo(tmp_path):
    wheel = this_pythons_wheel()
    assert "manylinux" in wheel.name, wheel.name
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {"PATH": f"{venv}/bin:{SYSTEM_PATH}", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for tool in ("cargo", "rustc", "maturin"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is on the test's PATH"
    probe = subprocess.run(["sh", "-c", "command -v cargo || command -v rustc"], env=env)
    assert probe.returncode != 0, "cargo or rustc found inside the test's environment"

    pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--no-index", str(wheel)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout + pip.stderr

    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    log = tmp_path / "ferrule.log"
    proc = subprocess.Popen([venv / "bin" / "ferrule", "app:app", "--bind", f"127.0.0.1:{port}"],
                            cwd=tmp_path, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        status, body = get(port)
        assert status == 200, log.read_text()
        # The package came from the venv the wheel went into, not from the source tree.
        assert body == f"from the wheel: {venv}/lib/python{sys.version_info.major}.{sys.version_info.minor}" \
                       "/site-packages/ferrule/__init__.py"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
