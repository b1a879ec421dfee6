"""TLS served by the WSGI server itself (issue 24): ferrule against Granian (rustls) and
gunicorn (the ssl module), each with its TLS switched on, and ferrule over plain HTTP, in one
run. bench.py's pinning: the server on CPU 1, the client (wrk or `openssl s_time`) on CPU 0.

Scenarios, per server (rows are medians of interleaved rounds):
- keep-alive hello: `wrk -t1 -c50` over https; the server's CPU time per request.
- new connection per request: `wrk -H 'Connection: close'` over https, a full handshake each
  (wrk never resumes a session); handshakes per CPU-second of the server.
- the same with `openssl s_time -new` (full handshakes) and `-reuse` (resumed sessions), one
  connection at a time, HTTP/1.0: handshakes per CPU-second, and how many were resumed.
- 1 MB file_wrapper: `wrk -c50` over https, RPS.

The certificate is an ECDSA P-256 leaf (what ACME clients and trustme issue by default) made
here with `openssl req`, its key PKCS#8 (the only format Granian reads). Every server uses one
worker process (ferrule's defaults; `granian --workers 1`; gunicorn `-w 1 -k gthread`).
The section between the markers below in bench/RESULTS.md is replaced with the tables.

`--smoke` runs each scenario for one second against ferrule only (TLS and plain) and fails
unless each served requests without errors (the harness check `make test` runs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bench
from bench import HERE, cpu_seconds, fmt, free_port, median, stop, wait_port

SERVER_CPU, LOAD_CPU = bench.SERVER_CPU, bench.LOAD_CPU
BEGIN, END = "<!-- tls.py: begin -->", "<!-- tls.py: end -->"
OPENSSL = "openssl"


def make_cert(where: Path) -> tuple[str, str]:
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def servers(cert: str, key: str) -> dict:
    """name -> (command(app, port), scheme)."""
    return {
        "ferrule": (lambda a, p: [*bench.cmd_ferrule(a, p), "--certfile", cert, "--keyfile", key], "https"),
        "granian": (lambda a, p: bench.cmd_granian(a, p, ("--ssl-certificate", cert, "--ssl-keyfile", key,
                                                          "--ssl-protocol-min", "tls1.2")), "https"),
        "gunicorn-gthread8": (lambda a, p: [*bench.cmd_gunicorn(a, p), "--certfile", cert, "--keyfile", key], "https"),
        "ferrule-plain": (bench.cmd_ferrule, "http"),
    }


def instructions_per_request(app: str, clients: int, tls: bool, n: int = 1000) -> float:
    """Callgrind instructions per keep-alive request of ferrule (`ferrule.run`, one
    process) over TLS or plain HTTP: bench.instructions_per_request with the connections
    wrapped in TLS sessions (handshakes happen in its warm-up, before the count). The
    client is a Python `ssl` socket and is not counted. `tls_cg.sh` runs rounds of it."""
    if not tls:
        return bench.instructions_per_request("ferrule", app, clients, n)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        ctx = ssl.create_default_context(cafile=cert)
        return bench.instructions_per_request(
            "ferrule", app, clients, n, options=f"certfile={cert!r}, keyfile={key!r}",
            wrap=lambda s: ctx.wrap_socket(s, server_hostname="localhost"))


@dataclass
class Scenario:
    name: str
    app: str
    client: str  # "wrk", "s_time-new", "s_time-reuse"
    headers: tuple = ()
    # What the table shows: CPU per request, handshakes per CPU-second, or RPS.
    per: str = "request"


SCENARIOS = [
    Scenario("keep-alive hello", "hello", "wrk"),
    Scenario("new connection per request (wrk, full handshake)", "hello", "wrk", ("Connection: close",), "handshake"),
    Scenario("s_time -new (full handshake, one at a time)", "hello", "s_time-new", per="handshake"),
    Scenario("s_time -reuse (resumed session, one at a time)", "hello", "s_time-reuse", per="handshake"),
    Scenario("1 MB file_wrapper", "file", "wrk", per="rps"),
]


@dataclass
class Row:
    cpu_us: float = float("nan")  # server CPU per request (or per connection)
    rps: float = float("nan")
    p99_ms: float = float("nan")
    resumed: float = float("nan")  # share of s_time's connections that were resumed
    requests: int = 0
    errors: str = ""


def run_wrk(url: str, sc: Scenario, seconds: int) -> tuple[int, float, float, str]:
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for h in sc.headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    reqs = int(m.group(1)) if (m := re.search(r"(\d+) requests in", out)) else 0
    rps = float(m.group(1)) if (m := re.search(r"Requests/sec:\s+([\d.]+)", out)) else 0.0
    p99 = bench.ms(m.group(1)) if (m := re.search(r"99%\s+(\S+)", out)) else float("nan")
    errs = [m.group(0) for pat in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)")
            if (m := re.search(pat, out))]
    return reqs, rps, p99, "; ".join(errs)


def run_s_time(port: int, reuse: bool, seconds: int) -> tuple[int, float, float, str]:
    """(connections, per second, share resumed, errors) from `openssl s_time`."""
    cmd = ["taskset", "-c", LOAD_CPU, OPENSSL, "s_time", "-connect", f"127.0.0.1:{port}", "-www", "/",
           "-time", str(seconds), "-reuse" if reuse else "-new"]
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    elapsed = time.monotonic() - start
    # Its own rate is per second of the client's user time, and its real time whole seconds.
    m = re.search(r"(\d+) connections in [\d.]+s;", out)
    if not m:
        return 0, 0.0, float("nan"), "s_time: " + out.strip()[-200:]
    conns = int(m.group(1))
    # With -reuse, s_time prints one letter per connection: 'r' resumed, '*' a new session.
    marks = re.findall(r"^[r*]+$", out, re.M)
    resumed = "".join(marks).count("r") / max(1, conns) if reuse else 0.0
    return conns, conns / elapsed, resumed, ""


def measure(cmd, scheme: str, sc: Scenario, seconds: int) -> Row:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *cmd(sc.app, port)], cwd=HERE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    r = Row()
    try:
        if not wait_port(port, proc):
            r.errors = "did not start: " + (proc.stderr.read().decode(errors="replace")[-300:]
                                            if proc.poll() is not None else "timeout")
            return r
        url = f"{scheme}://127.0.0.1:{port}/"
        subprocess.run(["curl", "-sk", "-o", "/dev/null", url], timeout=30)  # the worker is up
        c0 = cpu_seconds(proc.pid)[0]
        if sc.client == "wrk":
            r.requests, r.rps, r.p99_ms, r.errors = run_wrk(url, sc, seconds)
        elif scheme == "https":
            r.requests, r.rps, r.resumed, r.errors = run_s_time(port, sc.client == "s_time-reuse", seconds)
        else:
            return r  # no handshake to time on a plain port
        c1 = cpu_seconds(proc.pid)[0]
        if r.requests:
            r.cpu_us = (c1 - c0) / r.requests * 1e6
        elif not r.errors:
            r.errors = "no request served"
    finally:
        stop(proc)
    return r


def combine(rows: list[Row]) -> Row:
    out = Row()
    for f in ("cpu_us", "rps", "p99_ms", "resumed"):
        setattr(out, f, median([getattr(x, f) for x in rows]))
    out.requests = sum(x.requests for x in rows)
    out.errors = "; ".join(sorted({x.errors for x in rows if x.errors}))
    return out


def ratio(a: float, b: float) -> str:
    return "—" if a != a or b != b or not b else f"{a / b:.2f}"


def targets(res: dict) -> list[str]:
    """The issue's targets, each as the ratio this run measured."""
    def cpu(server, sc):
        return res.get((server, sc.name), Row()).cpu_us
    ka, full, file = SCENARIOS[0], SCENARIOS[1], SCENARIOS[4]
    per_s = {s: 1e6 / cpu(s, full) for s in ("ferrule", "granian") if cpu(s, full) == cpu(s, full)}
    return [
        f"- keep-alive hello, CPU per request: ferrule/granian {ratio(cpu('ferrule', ka), cpu('granian', ka))} "
        f"(target ≤ 0.6), ferrule/gunicorn {ratio(cpu('ferrule', ka), cpu('gunicorn-gthread8', ka))} (target ≤ 0.3), "
        f"ferrule TLS/ferrule plain {ratio(cpu('ferrule', ka), cpu('ferrule-plain', ka))} (target ≤ 1.5)",
        f"- full handshakes per CPU-second: ferrule/granian {ratio(per_s.get('ferrule', float('nan')), per_s.get('granian', float('nan')))} "
        "(target ≥ 1)",
        f"- 1 MB file_wrapper RPS: ferrule/granian "
        f"{ratio(res.get(('ferrule', file.name), Row()).rps, res.get(('granian', file.name), Row()).rps)} (target ≥ 1)",
    ]


def write(res: dict, names: list[str], seconds: int, repeat: int, out: Path) -> str:
    lines = [BEGIN, "## TLS served by the app server (issue 24)", "",
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, `bench/tls.py`, {seconds} s per run, "
             f"median of {repeat} interleaved rounds; server on CPU {SERVER_CPU}, client on CPU {LOAD_CPU}; "
             "ECDSA P-256 certificate. CPU is the server's whole process tree (utime+stime).", "",
             "Against the issue's targets:", "", *targets(res), ""]
    for sc in SCENARIOS:
        lines += [f"### {sc.name}", ""]
        if sc.per == "handshake":
            lines += ["| server | handshakes/CPU-s | CPU µs/conn | conns/s | resumed | ferrule/peer CPU | errors |",
                      "|---|---:|---:|---:|---:|---:|---|"]
        else:
            lines += ["| server | CPU µs/req | RPS | p99 ms | ferrule/peer CPU | ferrule/peer RPS | errors |",
                      "|---|---:|---:|---:|---:|---:|---|"]
        mine = res.get(("ferrule", sc.name), Row())
        for name in names:
            r = res.get((name, sc.name))
            if r is None or (sc.client.startswith("s_time") and name == "ferrule-plain"):
                continue
            if sc.per == "handshake":
                resumed = fmt(r.resumed * 100, 0) + "%" if r.resumed == r.resumed else "—"
                lines.append(f"| {name} | {fmt(1e6 / r.cpu_us if r.cpu_us else float('nan'), 0)} | {fmt(r.cpu_us)} "
                             f"| {fmt(r.rps, 0)} | {resumed} | {ratio(mine.cpu_us, r.cpu_us)} "
                             f"| {r.errors} |")
            else:
                lines.append(f"| {name} | {fmt(r.cpu_us)} | {fmt(r.rps, 0)} | {fmt(r.p99_ms, 2)} "
                             f"| {ratio(mine.cpu_us, r.cpu_us)} | {ratio(mine.rps, r.rps)} | {r.errors} |")
        lines.append("")
    lines.append(END)
    text = "\n".join(lines)
    bench.write_section(text, out, BEGIN, END)
    return text


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the tables show medians")
    ap.add_argument("--smoke", action="store_true", help="1 s per scenario, ferrule only, nothing written")
    ap.add_argument("--servers", help="comma-separated servers (default: all)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args, _ = ap.parse_known_args()  # bench/run.sh passes bench.py's flags too
    seconds, repeat = (1, 1) if args.smoke else (args.seconds, args.repeat)
    Path(os.environ.get("BENCH_FILE", "/tmp/ferrule-bench-1mb.bin")).write_bytes(os.urandom(1 << 20))  # as bench.py
    with tempfile.TemporaryDirectory() as tmp:
        table = servers(*make_cert(Path(tmp)))
        names = (["ferrule", "ferrule-plain"] if args.smoke
                 else args.servers.split(",") if args.servers else list(table))
        rounds: dict = {}
        for _ in range(repeat):
            for sc in SCENARIOS:
                for name in names:
                    cmd, scheme = table[name]
                    row = measure(cmd, scheme, sc, seconds)
                    rounds.setdefault((name, sc.name), []).append(row)
                    print(f"{sc.name:52} {name:18} {fmt(row.cpu_us):>8} µs {fmt(row.rps, 0):>8}/s {row.errors}",
                          file=sys.stderr)
    res = {k: combine(v) for k, v in rounds.items()}
    if args.smoke:
        bad = [f"{name}, {sc}: {r.errors or 'no request'}" for (name, sc), r in res.items()
               if (r.errors or not r.requests) and not (name == "ferrule-plain" and "s_time" in sc)]
        for line in bad:
            print("tls.py smoke:", line, file=sys.stderr)
        return 1 if bad else 0
    print(write(res, names, seconds, repeat, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
