"""Every numeric setting refuses a huge, negative, NaN or infinite value with one line
and exit 2: on the command line, in a config file, and (the core's own check) from
``ferrule.run`` keywords, where it is a ConfigError and never a panic.

The settings are read from :class:`Settings` (every int and float field), so a numeric
setting added later is tested without being listed here.
"""

import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from conftest import APPS
from ferrule import _ferrule
from ferrule.flags import build_parser
from ferrule.settings import Settings

_HINTS = typing.get_type_hints(Settings)
NUMERIC = [f.name for f in dataclasses.fields(Settings) if _HINTS[f.name] in (int, float)]
#: The settings the Rust core reads (and checks again): those it has a default for.
CORE = sorted(set(NUMERIC) & set(_ferrule.defaults()))

#: As typed on a command line or into FERRULE_CMD_ARGS.
BAD_TEXT = {
    int: ["1e300", "99999999999999999999", "-1", "nan", "inf"],
    float: ["1e300", "-1", "nan", "inf", "-inf"],
}
#: As written in a config file (Python expressions).
BAD_PYTHON = {
    int: ["1e300", "10**20", "-1", "float('nan')", "float('inf')"],
    float: ["1e300", "-1", "float('nan')", "float('inf')", "float('-inf')"],
}


def _flag(field):
    """The setting's long flag (``--keep-alive`` for keep_alive)."""
    for action in build_parser()._actions:
        if action.dest == field:
            return next(o for o in action.option_strings if o.startswith("--"))
    raise AssertionError(f"no flag sets {field}")


def _cases(table):
    return [(name, value) for name in NUMERIC for value in table[_HINTS[name]]]


def ferrule(*args):
    return subprocess.run([sys.executable, "-m", "ferrule", "routes:app", "--check-config", *args],
                          cwd=APPS, capture_output=True, text=True, timeout=30)


def assert_one_line(r, name):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferrule: error: "), r.stderr
    # The line names the setting: its flag, its name, or the core's dashed name.
    assert any(n in lines[0] for n in (name, name.replace("_", "-"), _flag(name))), lines[0]


def test_every_numeric_setting_is_covered():
    assert {"workers", "threads", "backlog", "keep_alive", "timeout", "graceful_timeout", "max_requests",
            "max_requests_jitter", "limit_request_body", "response_buffer_size", "umask"} <= set(NUMERIC)


@pytest.mark.parametrize("name, value", _cases(BAD_TEXT))
def test_a_bad_number_on_the_command_line_is_one_line_and_exit_2(name, value):
    assert_one_line(ferrule(f"{_flag(name)}={value}"), name)


@pytest.mark.parametrize("name, value", _cases(BAD_PYTHON))
def test_a_bad_number_in_the_config_file_is_one_line_and_exit_2(name, value, tmp_path):
    conf = tmp_path / "bad.conf.py"
    conf.write_text(f"{name} = {value}\n")
    assert_one_line(ferrule("-c", str(conf)), name)


#: Runs ferrule.run(app, **{setting: value}) for each case in a child (run installs
#: signal handlers and logging) and reports what each raised. A value the core took
#: would start serving: `ready` raises at once so the child still ends.
_RUN = """
import json, sys
import ferrule
from ferrule import _ferrule

def ready(addresses):
    raise RuntimeError("accepted")

out = []
for name, expr in json.loads(sys.argv[1]):
    try:
        ferrule.run(lambda e, s: [], ready=ready, bind="127.0.0.1:0", **{name: eval(expr)})
        out.append([name, expr, "returned", ""])
    except _ferrule.ConfigError as exc:
        out.append([name, expr, "ConfigError", str(exc)])
    except BaseException as exc:
        out.append([name, expr, type(exc).__name__, str(exc)])
print(json.dumps(out))
"""

_RUN_CASES = [(name, value) for name in CORE for value in BAD_PYTHON[_HINTS[name]] + ["True", "'3'"]]


@pytest.fixture(scope="module")
def run_outcomes():
    r = subprocess.run([sys.executable, "-c", _RUN, json.dumps(_RUN_CASES)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return {(name, expr): (kind, message) for name, expr, kind, message in json.loads(r.stdout)}


@pytest.mark.parametrize("name, value", _RUN_CASES)
def test_the_core_refuses_a_bad_number_from_ferrule_run(name, value, run_outcomes):
    kind, message = run_outcomes[(name, value)]
    assert kind == "ConfigError", (kind, message)
    assert "\n" not in message, message
    assert any(n in message for n in (name.replace("_", "-"), _flag(name).lstrip("-"))), message
