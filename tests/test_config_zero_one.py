"""0 and 1 in a config file mean False and True for every boolean setting, and off and
on for those whose True and False do (`server_timing`, `proxy_protocol`,
`request_buffering`): `server_timing = 0` used to be refused while `False` was taken."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from conftest import APPS
from ferrule import gunicorn as g
from ferrule import settings, validators

ON_OFF = ("server_timing", "proxy_protocol", "request_buffering")


def boolean_settings() -> list[str]:
    """Every boolean a config file may set: gunicorn's implemented ones, then ferrule's own."""
    names = [s.name for s in g.SPECS if s.check is validators.boolean and s.status == g.IMPLEMENTED
             and s.name != "daemon"]
    hints = typing.get_type_hints(settings.Settings)
    names += [n for n, t in hints.items() if t is bool and n not in names and n != "daemon"]
    return names + list(ON_OFF)


def printed(tmp_path, value: str) -> str:
    conf = tmp_path / f"b{len(value)}{value}.conf.py"
    conf.write_text("".join(f"{name} = {value}\n" for name in boolean_settings()))
    r = subprocess.run([sys.executable, "-m", "ferrule", "compat_app:app", "-c", str(conf), "--print-config"],
                       capture_output=True, text=True, timeout=60, cwd=APPS)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("number, word", [("0", "False"), ("1", "True")])
def test_zero_and_one_read_as_false_and_true(tmp_path, number, word):
    assert len(boolean_settings()) > 10
    assert printed(tmp_path, number) == printed(tmp_path, word)


def test_the_validators_take_zero_and_one_and_still_refuse_other_numbers():
    assert validators.server_timing(0) == "off" and validators.server_timing(1) == "on"
    assert validators.proxy_protocol(0) == "off" and validators.proxy_protocol(1) == "auto"
    assert validators.boolean(0) is False and validators.boolean(1) is True
    for bad in (2, -1, 0.0, "yes"):
        with pytest.raises(validators.BadValue):
            validators.boolean(bad)
    with pytest.raises(validators.BadValue):
        validators.server_timing(2)
