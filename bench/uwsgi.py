"""Behind one nginx: ferrule `--protocol uwsgi` against uWSGI itself and against ferrule
over HTTP (issue 23), hello and Flask, in one run.

The app server runs pinned to CPU 1; nginx (one process: no master, one worker) and
`wrk -t1` share CPU 0, so the app server's CPU time is its own and nginx's is reported in
a column of its own. Per scenario and server: the app server's CPU time per request
(utime+stime of its process tree / requests, and the user part), nginx's CPU per request,
RPS, p50/p99 as the client saw them through nginx, and the app server's RSS. Rows are
medians of interleaved rounds; the section "Behind nginx: uwsgi_pass" of bench/RESULTS.md
is replaced with the table (the rest of the file is bench.py's).

Servers:
- ferrule-uwsgi: `ferrule --protocol uwsgi` (defaults: a master and one worker), nginx
  `uwsgi_pass` with the distribution's `uwsgi_params` (a connection per request: nginx
  never keeps a uwsgi upstream connection).
- uwsgi: uWSGI on its own protocol, one process, no master, no `--http`, one thread (the
  one thread that runs the app in ferrule); uwsgi-t8: the same with `--threads 8` (its
  configuration in bench.py).
- ferrule-http: ferrule over HTTP, nginx `proxy_pass` to an `upstream` with `keepalive`
  (docs/deploy.md's setup); ferrule-http-close: `proxy_pass` with nginx's defaults (HTTP/1.0,
  a connection per request, as uwsgi_pass does).
- `-unix`: the same over a unix socket instead of 127.0.0.1.

`--smoke` runs each scenario for one second against ferrule-uwsgi (TCP and unix socket) and
ferrule-http only, and fails unless each served requests without errors (the harness check
`make test` runs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bench
from bench import BIN, HERE, Result, Scenario, combine, cpu_seconds, fmt, free_port, rss_mb, run_wrk, stop, wait_port

NGINX = "/usr/sbin/nginx"
UWSGI_PARAMS = "/etc/nginx/uwsgi_params"
SERVER_CPU, FRONT_CPU = bench.SERVER_CPU, bench.LOAD_CPU
BEGIN, END = "<!-- uwsgi.py: begin -->", "<!-- uwsgi.py: end -->"

SCENARIOS = [Scenario("hello", "hello"), Scenario("flask hello", "flask_app")]

# How nginx reaches the app server, per front: the body of `location /`. `{addr}` is
# `127.0.0.1:PORT` or `unix:PATH`, as nginx and ferrule's `-b` both write it.
FRONTS = {
    "uwsgi": f"include {UWSGI_PARAMS};\n            uwsgi_pass {{addr}};",
    "http": "proxy_pass http://app;\n            proxy_http_version 1.1;\n"
            "            proxy_set_header Connection \"\";\n            proxy_set_header Host $host;",
    "http-close": "proxy_pass http://{addr};",
}

CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    uwsgi_temp_path {tmp}/uwsgi;
    upstream app {{
        server {addr};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{
            {location}
        }}
    }}
}}
"""


def cmd_ferrule(app, addr, *extra):
    return [str(BIN / "ferrule"), f"apps:{app}", "-b", addr, "--log-level", "warning", *extra]


def cmd_uwsgi(app, addr, *extra):
    return [str(BIN / "uwsgi"), "--socket", addr.removeprefix("unix:"), "--module", f"apps:{app}",
            "--disable-logging", "--die-on-term", "--need-app", *extra]


def ferrule_uwsgi(app, addr):
    return cmd_ferrule(app, addr, "--protocol", "uwsgi")


# server -> (command, front, over a unix socket)
SERVERS = {
    "ferrule-uwsgi": (ferrule_uwsgi, "uwsgi", False),
    "uwsgi": (cmd_uwsgi, "uwsgi", False),
    "uwsgi-t8": (lambda a, p: cmd_uwsgi(a, p, "--threads", "8"), "uwsgi", False),
    "ferrule-uwsgi-unix": (ferrule_uwsgi, "uwsgi", True),
    "uwsgi-unix": (cmd_uwsgi, "uwsgi", True),
    "ferrule-http": (cmd_ferrule, "http", False),
    "ferrule-http-unix": (cmd_ferrule, "http", True),
    "ferrule-http-close": (cmd_ferrule, "http-close", False),
}
# (ferrule's row, the row it is compared with, the target for the ratio)
RATIOS = [
    ("ferrule-uwsgi", "uwsgi", "target ≤ 0.7×"),
    ("ferrule-uwsgi", "uwsgi-t8", ""),
    ("ferrule-uwsgi-unix", "uwsgi-unix", "target ≤ 0.7×"),
    ("ferrule-uwsgi", "ferrule-http-close", "target ≤ 1×, a connection per request both"),
    ("ferrule-uwsgi", "ferrule-http", "target ≤ 1×, HTTP with upstream keep-alive"),
    ("ferrule-uwsgi-unix", "ferrule-http-unix", "target ≤ 1×, HTTP with upstream keep-alive"),
]


@dataclass
class Row(Result):
    """A bench.Result and nginx's CPU per request."""

    nginx_us: float = float("nan")


def start(cmd: list[str], cpu: str, tmp: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", cpu, *cmd], cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)},
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.err", "wb"), start_new_session=True)


def listening(addr: str) -> bool:
    if addr.startswith("unix:"):
        return Path(addr.removeprefix("unix:")).exists()
    port = addr.rpartition(":")[2]
    return bool(subprocess.run(["ss", "-Hltn", "sport", "=", f":{port}"], capture_output=True, text=True).stdout.strip())


def wait_listening(addr: str, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    """Waits for a listener without connecting to it: an empty connection is something a
    uwsgi server may log as a bad packet."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if listening(addr):
            return True
        time.sleep(0.05)
    return False


def measure(server: str, sc: Scenario, seconds: float) -> Row:
    command, front, unix = SERVERS[server]
    front_port = free_port()
    r = Row()
    with tempfile.TemporaryDirectory(prefix="ferrule-bench-nginx-") as tmpdir:
        tmp = Path(tmpdir)
        addr = f"unix:{tmp}/app.sock" if unix else f"127.0.0.1:{free_port()}"
        conf = tmp / "nginx.conf"
        conf.write_text(CONF.format(tmp=tmp, addr=addr, front=front_port, location=FRONTS[front].format(addr=addr)))
        app = start(command(sc.app, addr), SERVER_CPU, tmp, "server")
        nginx = start([NGINX, "-c", str(conf), "-e", str(tmp / "error.log")], FRONT_CPU, tmp, "nginx")
        try:
            if not (wait_listening(addr, app) and wait_port(front_port, nginx)):
                logs = " ".join((tmp / f).read_text(errors="replace")[-300:] for f in ("server.err", "nginx.err"))
                r.errors = f"did not start: {logs.strip()}"
                return r
            bench.warm(front_port, sc.path)
            time.sleep(0.3)
            c0, n0 = cpu_seconds(app.pid), cpu_seconds(nginx.pid)
            reqs, r.rps, r.p50_ms, r.p99_ms, r.waiting, r.errors = run_wrk(front_port, sc, seconds)
            c1, n1 = cpu_seconds(app.pid), cpu_seconds(nginx.pid)
            r.rss_mb = rss_mb(app.pid)
            r.requests = reqs
            if reqs:
                r.cpu_us = (c1[0] - c0[0]) / reqs * 1e6
                r.user_us = (c1[1] - c0[1]) / reqs * 1e6
                r.nginx_us = (n1[0] - n0[0]) / reqs * 1e6
            failed = [line for line in (tmp / "error.log").read_text(errors="replace").splitlines() if "[error]" in line]
            if failed:
                r.errors = "; ".join(filter(None, [r.errors, f"nginx: {len(failed)} errors, first: {failed[0][-200:]}"]))
        finally:
            stop(app)
            stop(nginx)
    return r


# What nginx's `uwsgi_params` send for `GET /` from wrk (the values of one request).
NGINX_VARS = [("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""), ("CONTENT_LENGTH", ""),
              ("REQUEST_URI", "/"), ("PATH_INFO", "/"), ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
              ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"), ("REMOTE_ADDR", "127.0.0.1"),
              ("REMOTE_PORT", "51234"), ("SERVER_PORT", "8080"), ("SERVER_NAME", ""), ("HTTP_HOST", "127.0.0.1")]


def uwsgi_packet(pairs) -> bytes:
    """A uwsgi packet: modifier1 0, the vars' size (u16 LE), modifier2 0, then each name
    and value behind its u16 LE length."""
    body = b"".join(len(x).to_bytes(2, "little") + x for k, v in pairs for x in (k.encode(), v.encode()))
    return b"\0" + len(body).to_bytes(2, "little") + b"\0" + body


CALLGRIND = {
    # (server, request) -> the command under valgrind. ferrule runs in one process
    # (`ferrule.run`, no master) so callgrind_control reaches the process that serves.
    "ferrule-uwsgi": lambda app, port: [sys.executable, "-c", f"import ferrule, apps; ferrule.run(apps.{app}, "
                                        f"bind='127.0.0.1:{port}', log_level='warning', protocol='uwsgi')"],
    "uwsgi": lambda app, port: cmd_uwsgi(app, f"127.0.0.1:{port}"),
    "ferrule-http-close": lambda app, port: [sys.executable, "-c", f"import ferrule, apps; ferrule.run(apps.{app}, "
                                             f"bind='127.0.0.1:{port}', log_level='warning')"],
}
HTTP_CLOSE = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"  # what nginx's proxy_pass sends by default


def instructions_per_request(server: str, app: str, n: int = 1000) -> float:
    """User-space instructions per request under callgrind (the kernel's share is not
    counted): a new connection per request, as nginx makes, sending what nginx sends;
    counters zeroed after 300 warm-up requests; all threads counted."""
    port = free_port()
    stem = f"ferrule-callgrind-uwsgi-{server}-{os.getpid()}"
    for old in Path("/tmp").glob(f"{stem}.*"):
        old.unlink()
    request = HTTP_CLOSE if server == "ferrule-http-close" else uwsgi_packet(NGINX_VARS)
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file=/tmp/{stem}.%p",
                             *CALLGRIND[server](app, port)], cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def run(count):
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.sendall(request)
                while s.recv(65536):
                    pass

    try:
        if not wait_listening(f"127.0.0.1:{port}", proc, timeout=180):
            return float("nan")
        run(300)
        pids = [str(p) for p in bench.tree(proc.pid)]
        for p in pids:
            subprocess.run(["callgrind_control", "-z", p], capture_output=True, timeout=120)
        run(n)
        for p in pids:
            subprocess.run(["callgrind_control", "-d", p], capture_output=True, timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    total = 0
    for dump in Path("/tmp").glob(f"{stem}.*.*"):
        m = re.search(r"^(?:totals|summary): (\d+)", dump.read_text(errors="replace"), re.M)
        if m:
            total += int(m.group(1))
        dump.unlink()
    for old in Path("/tmp").glob(f"{stem}.*"):
        old.unlink()
    return total / n if total else float("nan")


def combine_rows(runs: list[Row]) -> Row:
    r = Row()
    r.__dict__.update(combine(runs).__dict__)
    r.nginx_us = bench.median([x.nginx_us for x in runs])
    return r


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if a == a and b == b and b else "—"


def section(results: dict, runs: dict, servers: list[str], seconds: float, repeat: int, instr: dict) -> str:
    lines = [BEGIN, "## Behind nginx: uwsgi_pass (issue 23)", "",
             f"Generated by `bench/uwsgi.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
             f"The app server pinned to CPU {SERVER_CPU}; nginx (one process) and `wrk -t1 -c50` share CPU "
             f"{FRONT_CPU}, so nginx's CPU is its own column and not in the app server's. {seconds:g} s per run, "
             f"median of {repeat} interleaved rounds. ferrule-uwsgi: `--protocol uwsgi` behind `uwsgi_pass` "
             "with the distribution's `uwsgi_params`; uwsgi: uWSGI on its own protocol, one process, no master, "
             "one thread (uwsgi-t8: `--threads 8`); ferrule-http: `proxy_pass` to an upstream with `keepalive`; "
             "ferrule-http-close: `proxy_pass` with nginx's defaults (a connection per request, as `uwsgi_pass`); "
             "`-unix`: over a unix socket instead of TCP on 127.0.0.1.",
             ""]
    for sc in SCENARIOS:
        lines += [f"### {sc.name}", "",
                  "| server | CPU µs/req | of which user | nginx CPU µs/req | RPS | p50 ms | p99 ms | RSS MB | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for server in servers:
            r = results.get((server, sc.name))
            if r:
                lines.append(f"| {server} | {fmt(r.cpu_us)} | {fmt(r.user_us)} | {fmt(r.nginx_us)} | {fmt(r.rps, 0)} | "
                             f"{fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} | {fmt(r.rss_mb)} | {r.errors} |")
        if any((ours, sc.name) in results for ours, _, _ in RATIOS):
            lines.append("")
            for ours, peer, target in RATIOS:
                mine, other = results.get((ours, sc.name)), results.get((peer, sc.name))
                if mine and other:
                    per_round = ", ".join(ratio(a.cpu_us, b.cpu_us) for a, b in
                                          zip(runs[(ours, sc.name)], runs[(peer, sc.name)]))
                    lines.append(f"- {ours} / {peer} CPU: {ratio(mine.cpu_us, other.cpu_us)}"
                                 f" (rounds: {per_round}){'; ' + target if target else ''}.")
        lines.append("")
    if instr:
        names = list(CALLGRIND)
        lines += ["### Instructions per request (callgrind)", "",
                  "User space only (callgrind counts no kernel work), all threads; no nginx: a Python client "
                  "opens a connection per request and sends what nginx sends (uwsgi_params' variables for `GET /`, "
                  "or `proxy_pass`'s default HTTP/1.0 request); counters zeroed after 300 requests, then 1,000.", "",
                  "| app | " + " | ".join(names) + " | ferrule-uwsgi / uwsgi | ferrule-uwsgi / ferrule-http-close |",
                  "|---|" + "---|" * (len(names) + 2)]
        for sc in SCENARIOS:
            row = instr.get(sc.app, {})
            if row:
                lines.append(f"| {sc.name} | " + " | ".join(fmt(row.get(n, float('nan')), 0) for n in names)
                             + f" | {ratio(row['ferrule-uwsgi'], row['uwsgi'])}"
                             + f" | {ratio(row['ferrule-uwsgi'], row['ferrule-http-close'])} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the table shows medians")
    ap.add_argument("--smoke", action="store_true", help="1 s per scenario, ferrule only, nothing written")
    ap.add_argument("--servers", help="comma-separated servers")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args, _ = ap.parse_known_args()  # run.sh passes bench.py's flags too
    if not Path(NGINX).exists():
        sys.exit(f"{NGINX} is missing: apt-get install nginx-light")
    servers = args.servers.split(",") if args.servers else list(SERVERS)
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        ap.error(f"--servers: unknown {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    seconds, repeat = args.seconds, args.repeat
    if args.smoke:
        servers, seconds, repeat = ["ferrule-uwsgi", "ferrule-uwsgi-unix", "ferrule-http"], 1, 1
    runs: dict = {}
    for round_ in range(repeat):
        for sc in SCENARIOS:
            for server in servers:
                r = measure(server, sc, seconds)
                runs.setdefault((server, sc.name), []).append(r)
                print(f"[{round_ + 1}/{repeat}] {sc.name:12} {server:19} cpu {fmt(r.cpu_us):>7} us/req "
                      f"(user {fmt(r.user_us):>6})  nginx {fmt(r.nginx_us):>6} us/req  rps {fmt(r.rps, 0):>7}  "
                      f"p50 {fmt(r.p50_ms, 2):>6} p99 {fmt(r.p99_ms, 2):>6} ms  rss {fmt(r.rss_mb):>5} MB  {r.errors}",
                      flush=True)
    results = {k: combine_rows(v) for k, v in runs.items()}
    instr = {}
    if not (args.smoke or args.no_callgrind):
        for sc in SCENARIOS:
            for server in CALLGRIND:
                n = instructions_per_request(server, sc.app)
                instr.setdefault(sc.app, {})[server] = n
                print(f"callgrind {sc.name:12} {server:19} {fmt(n, 0)} instructions/request", flush=True)
    if args.smoke:
        failed = [k for k, r in results.items() if not r.requests or r.errors]
        print("uwsgi smoke:", "ok" if not failed else f"failed {failed}")
        sys.exit(1 if failed else 0)
    bench.write_section(section(results, runs, servers, seconds, repeat, instr), Path(args.out), BEGIN, END)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
