"""DNS by explicit rule (docs/egress.md, "Policy"): under an allow-list the resolvers are
reached only when the keyword `nameserver` allows them. Allow rules that name hosts without
it get one start-up warning from the master (or `ferrule.run`), and the workers serve all the
same. (The
keyword's matching is in the Rust table tests: the resolvers here are not on loopback.)"""

from __future__ import annotations

import signal
import subprocess
import sys

from conftest import APPS, booted, free_port, reaped, wait_for_port
from .egress_support import call, listeners, start, to_port, wait_records  # noqa: F401

HINT = "egress: the allow rules name hosts"


def dns_warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if HINT in line]


def reach(s, log, target):
    """One connect to `target` through the app: its record's (verdict, rule)."""
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    rec = wait_records(log, 1, to_port(target.port))[-1]
    assert rec["request_id"] == got["request_id"]
    return rec["verdict"], rec["rule"]


def test_named_hosts_without_a_nameserver_rule_warn_once_and_still_serve(serve, tmp_path, listeners):
    target = listeners()
    rule = f"localhost:{target.port}"
    s, log = start(serve, tmp_path, "-w", "2", "--egress-allow", rule, "--egress-allow", "127.0.0.2")
    booted(s, 2)
    assert reach(s, log, target) == ("allow", rule)
    lines = dns_warnings(s.log())
    # One line from the master, none from the two workers; it names the rules that need
    # DNS (not the address rule) and how to allow it.
    assert len(lines) == 1, s.log()
    assert "[WARNING]" in lines[0] and f"({rule})" in lines[0], lines[0]
    assert "--egress-allow nameserver" in lines[0], lines[0]
    assert target.settle() == 1


def test_a_nameserver_rule_or_an_address_only_list_says_nothing(serve, tmp_path, listeners):
    target = listeners()
    s, log = start(serve, tmp_path, "--egress-allow", f"localhost:{target.port},nameserver",
                   name="with-dns.log")
    assert reach(s, log, target) == ("allow", f"localhost:{target.port}")
    t, log2 = start(serve, tmp_path, "--egress-allow", f"127.0.0.1:{target.port}", name="addresses.log")
    assert reach(t, log2, target) == ("allow", f"127.0.0.1:{target.port}")
    assert dns_warnings(s.log()) == [] and dns_warnings(t.log()) == []
    assert target.settle() == 2


RUN_SCRIPT = """
import sys
sys.path.insert(0, {apps!r})
import ferrule
from egress_app import app
ferrule.run(app, bind="127.0.0.1:{port}", egress_allow="localhost:{target}")
"""


def test_ferrule_run_warns_too(tmp_path, listeners):
    target, port = listeners(), free_port()
    err = tmp_path / "run.err"
    script = RUN_SCRIPT.format(apps=str(APPS), port=port, target=target.port)
    with open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=stderr)
    with reaped(proc):
        wait_for_port(port, proc)
        # The line comes before the port listens (the policy is read first).
        assert len(dns_warnings(err.read_text())) == 1, err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
