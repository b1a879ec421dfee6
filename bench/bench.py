"""ferrule against its peers, every scenario, in one run.

Each server runs pinned to CPU 1 and wrk to CPU 0. Per scenario and server it records the
server's CPU time per request (utime+stime of the whole process tree / requests, and the
utime part), RPS, p50, p99, RSS, the clients it left waiting in its accept queue through the
run (whose wait no p99 shows) and the connections made per request, and writes
bench/RESULTS.md with ratios ferrule/peer. The hello scenario also runs the socket floor (`floor.c`), the kernel's share
every server pays, and says what ferrule and bjoern spend above it. `--smoke` runs every
scenario for one second against ferrule only (the harness check used in CI).
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, LOAD_CPU = "1", "0"


def cmd_ferrule(app, port):
    return [str(BIN / "ferrule"), f"apps:{app}", "-b", f"127.0.0.1:{port}", "--log-level", "warning"]


def cmd_bjoern(app, port):
    return [sys.executable, "-c", f"import bjoern, apps; bjoern.run(apps.{app}, '127.0.0.1', {port})"]


def cmd_granian(app, port, extra=()):
    return [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--log-level", "warning", *extra, f"apps:{app}"]


def cmd_gunicorn(app, port, worker=("-k", "gthread", "--threads", "8")):
    return [str(BIN / "gunicorn"), *worker, "-w", "1", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", f"apps:{app}"]


def cmd_uwsgi(app, port):
    return [str(BIN / "uwsgi"), "--http11-socket", f"127.0.0.1:{port}", "--module", f"apps:{app}",
            "--processes", "1", "--threads", "8", "--disable-logging", "--die-on-term", "--need-app"]


def cmd_waitress(app, port):
    return [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{port}", "--threads=8", f"apps:{app}"]


def cmd_pyruvate(app, port):
    return [sys.executable, "-c", f"import pyruvate, apps; pyruvate.serve(apps.{app}, '127.0.0.1:{port}', 8)"]


def cmd_floor(app, port):
    """The socket floor (`floor.c`), built on first use: a reference, not a peer."""
    exe, src = HERE / ".cache" / "floor", HERE / "floor.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        exe.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    return [str(exe), str(port)]


SERVERS = {
    "ferrule": cmd_ferrule,
    "bjoern": cmd_bjoern,
    "granian": cmd_granian,
    "granian-bt1": lambda a, p: cmd_granian(a, p, ("--blocking-threads", "1")),
    "gunicorn-gthread8": cmd_gunicorn,
    "gunicorn-sync": lambda a, p: cmd_gunicorn(a, p, ("-k", "sync")),
    "uwsgi-t8": cmd_uwsgi,
    "waitress-t8": cmd_waitress,
    "pyruvate-t8": cmd_pyruvate,
    "floor": cmd_floor,
}
# The floor answers every read with one hello response: it runs in this scenario only,
# and it is no peer (not in the p99 line).
FLOOR_SCENARIO = "hello"


@dataclass
class Scenario:
    name: str
    app: str
    conns: int = 50
    script: str | None = None
    headers: list = field(default_factory=list)
    path: str = "/"
    # wrk times one response in each pipelined batch but ranks the samples against every
    # request, so with `pipeline.lua` its percentiles are 0 or meaningless: not shown.
    timed: bool = True


SCENARIOS = [
    Scenario("hello", "hello"),
    Scenario("flask hello", "flask_app"),
    Scenario("sleep 10ms, 50 conns", "sleep", 50),
    Scenario("sleep 10ms, 200 conns", "sleep", 200),
    Scenario("4 KB POST echo", "echo", script="post.lua"),
    Scenario("100 KB generator (4 KB chunks)", "stream"),
    Scenario("1 MB file_wrapper", "file"),
    Scenario("pipelined hello (16 deep)", "hello", script="pipeline.lua", timed=False),
    Scenario("hello, new connection per request", "hello", headers=["Connection: close"]),
]


@dataclass
class Result:
    cpu_us: float = float("nan")
    # The part of cpu_us spent in user space (utime); the rest is the kernel's.
    user_us: float = float("nan")
    rps: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    rss_mb: float = float("nan")
    idle_rss_mb: float = float("nan")
    idle_worker_rss_mb: float = float("nan")
    requests: int = 0
    # Clients whose connection the server had not accepted at any of the samples
    # spanning most of the run: their requests were never answered (`left_waiting`).
    waiting: float = float("nan")
    # Connections the kernel completed towards the server, per request (1 when every
    # request comes on a new connection, near 0 with keep-alive).
    conns_per_req: float = float("nan")
    errors: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(d.name))
            except (OSError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime+stime, utime) of the process tree, in seconds."""
    total = user = 0
    for p in tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime
            user += int(f[11])
        except (OSError, IndexError):
            pass
    return total / TICK, user / TICK


def rss_mb(pid: int, largest: bool = False) -> float:
    """VmRSS of the process tree, summed, or of its largest process (the worker)."""
    sizes = []
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]))
        except OSError:
            pass
    return (max(sizes, default=0) if largest else sum(sizes)) / 1024


def warm(port: int, path: str) -> None:
    """One request, so a server whose master binds before its worker boots is serving."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while s.recv(65536):
                pass
    except OSError:
        pass


def wait_port(port: int, proc, timeout=20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[unit]


def passive_opens() -> int:
    """The kernel's count of TCP connections accepted by listeners (handshakes completed
    on the server side), from /proc/net/snmp; the bench's own traffic is all there is."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the listener on `port` (its Recv-Q).
    Asks the kernel's socket diagnostics for listening sockets only, which costs next to
    nothing; a walk of established sockets would also walk the TIME_WAIT ones the close
    scenarios leave behind (tens of milliseconds on the load generator's CPU, enough to
    move its p99)."""
    out = subprocess.run(["ss", "-Hltn", "sport", "=", f":{port}"], capture_output=True, text=True, timeout=30).stdout
    rows = (line.split() for line in out.splitlines())
    return sum(int(f[1]) for f in rows if len(f) > 2)


def left_waiting(port: int, seconds: float, proc, opened=passive_opens) -> float:
    """Clients the server left unaccepted through the whole run, sampled from just after the
    start to just before the end. wrk sends a request as soon as it connects, and its
    percentiles count only answered requests, so a server that serves a few connections and
    leaves the others in its accept queue shows a low p99 for the few. Exact in two cases:
    the queue was empty at one sample (nobody waited throughout: 0), or no connection was
    made between the first and last samples (the same clients waited throughout). Otherwise
    (a queue that never emptied while new connections kept coming) it is unknown: nan.
    `opened` counts connections made (system-wide: the bench's traffic is all there is)."""
    first_at, last_at = min(0.5, seconds * 0.2), max(seconds - 0.5, seconds * 0.8)
    start = time.monotonic()
    queues, opens = [], []
    for at in (first_at, (first_at + last_at) / 2, last_at):
        time.sleep(max(0.0, start + at - time.monotonic()))
        if proc.poll() is not None:
            break
        opens.append(opened())
        queues.append(accept_queue(port))
    if not queues:
        return float("nan")
    if min(queues) == 0:
        return 0.0
    return float(min(queues)) if opens[-1] == opens[0] else float("nan")


def run_wrk(port: int, sc: Scenario, seconds: float) -> tuple[int, float, float, float, float, str]:
    duration = max(1, round(seconds))  # wrk takes whole seconds
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{sc.conns}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for h in sc.headers:
        cmd += ["-H", h]
    if sc.script:
        cmd += ["-s", str(HERE / sc.script)]
    cmd.append(f"http://127.0.0.1:{port}{sc.path}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    waiting = left_waiting(port, duration, proc)
    try:
        out = proc.communicate(timeout=seconds + 60)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    reqs = int(re.search(r"(\d+) requests in", out).group(1)) if "requests in" in out else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) if "Requests/sec" in out else 0.0
    p50 = re.search(r"50%\s+(\S+)", out) if sc.timed else None
    p99 = re.search(r"99%\s+(\S+)", out) if sc.timed else None
    errs = []
    for pat in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)"):
        m = re.search(pat, out)
        if m:
            errs.append(m.group(0))
    if reqs and sc.timed and not p99:
        errs.append("no latency percentiles in wrk's output")
    return (reqs, rps, ms(p50.group(1)) if p50 else float("nan"), ms(p99.group(1)) if p99 else float("nan"),
            waiting, "; ".join(errs))


def measure(server: str, sc: Scenario, seconds: float) -> Result:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *SERVERS[server](sc.app, port)], cwd=HERE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    r = Result()
    try:
        if not wait_port(port, proc):
            r.errors = "did not start: " + (proc.stderr.read().decode(errors="replace")[-300:] if proc.poll() is not None else "timeout")
            return r
        warm(port, sc.path)
        time.sleep(0.3)
        r.idle_rss_mb = rss_mb(proc.pid)
        r.idle_worker_rss_mb = rss_mb(proc.pid, largest=True)
        c0, o0 = cpu_seconds(proc.pid), passive_opens()
        reqs, r.rps, r.p50_ms, r.p99_ms, r.waiting, r.errors = run_wrk(port, sc, seconds)
        c1, o1 = cpu_seconds(proc.pid), passive_opens()
        r.rss_mb = rss_mb(proc.pid)
        r.requests = reqs
        if reqs:
            r.cpu_us = (c1[0] - c0[0]) / reqs * 1e6
            r.user_us = (c1[1] - c0[1]) / reqs * 1e6
            r.conns_per_req = (o1 - o0) / reqs
    finally:
        stop(proc)
    return r


def memory_soak(total: int) -> list[tuple[int, float]]:
    """RSS of ferrule at points of a long hello run."""
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *cmd_ferrule("hello", port)], cwd=HERE,
                            env={**os.environ, "PYTHONPATH": str(HERE)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    points = []
    try:
        wait_port(port, proc)
        done = 0
        points.append((0, rss_mb(proc.pid)))
        while done < total:
            reqs, *_ = run_wrk(port, Scenario("soak", "hello"), 5)
            if not reqs:
                break
            done += reqs
            points.append((done, rss_mb(proc.pid)))
    finally:
        stop(proc)
    return points


# (app, clients) -> column label of the callgrind table.
CALLGRIND_LABELS = {
    ("hello", 1): "hello, 1 client",
    ("hello", 8): "hello, 8 clients",
    ("hello_dynamic", 8): "hello, headers built per call, 8 clients",
    ("flask_app", 8): "Flask hello, 8 clients",
    ("echo", 8): "4 KB POST echo, 8 clients",
}

#: The request each callgrind client sends, and how its answer ends (hello's by default).
ECHO_BODY = b"a" * 4095 + b"!"
CALLGRIND_REQUESTS = {
    "echo": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Length: 4096\r\n\r\n" + ECHO_BODY, ECHO_BODY[-16:]),
}


def instructions_per_request(server: str, app: str = "hello", clients: int = 1, n: int = 1000,
                             options: str = "", preamble: Optional[Callable[[int], bytes]] = None,
                             wrap: Optional[Callable[[socket.socket], socket.socket]] = None) -> float:
    """Instructions per request under callgrind: counters are zeroed after a warm-up,
    then `clients` keep-alive connections send a request each, read the answers, and
    repeat until about `n` requests are done; the dump is read. Several clients make
    the server find several requests ready at once, as under load. `options` are more
    `ferrule.run` keywords ("proxy_protocol='v1'"); `preamble(i)` is sent first on
    connection `i` (a PROXY header: `proxy_cost.py`); `wrap` turns each connection into
    the one requests go over (a TLS session: `tls.py`), its handshake in the warm-up."""
    port = free_port()
    # The measuring process's id in the name: two benches on one host must not read
    # (or delete) each other's dumps.
    stem = f"ferrule-callgrind-{server}-{os.getpid()}"
    out = f"/tmp/{stem}.%p"
    for old in Path("/tmp").glob(f"{stem}.*"):
        old.unlink()
    # ferrule in one process (`ferrule.run`, no master): callgrind_control cannot reach a
    # forked child. The request path is the same code as in a worker.
    cmd = ([sys.executable, "-c", f"import ferrule, apps; ferrule.run(apps.{app}, bind='127.0.0.1:{port}', "
            f"log_level='warning', {options})"] if server == "ferrule" else SERVERS[server](app, port))
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd], cwd=HERE,
                            env={**os.environ, "PYTHONPATH": str(HERE)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    rounds = max(1, n // clients)
    try:
        if not wait_port(port, proc, timeout=180):
            return float("nan")
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
        for i, s in enumerate(socks):
            s.sendall(preamble(i) if preamble else b"")
        if wrap:
            socks = [wrap(s) for s in socks]
        req, end = CALLGRIND_REQUESTS.get(app, (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"Hello, World!"))

        def run(count):
            for _ in range(count):
                for s in socks:
                    s.sendall(req)
                for s in socks:
                    got = b""
                    while not got.endswith(end):
                        got += s.recv(4096)

        run(max(1, 300 // clients))
        pids = [str(p) for p in tree(proc.pid)]
        for p in pids:
            subprocess.run(["callgrind_control", "-z", p], capture_output=True, timeout=120)
        run(rounds)
        for p in pids:
            subprocess.run(["callgrind_control", "-d", p], capture_output=True, timeout=120)
        for s in socks:
            s.close()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    total = 0
    # Dumps made by callgrind_control are FILE.N; FILE itself is written only at exit.
    for dump in Path("/tmp").glob(f"{stem}.*.*"):
        m = re.search(r"^(?:totals|summary): (\d+)", dump.read_text(errors="replace"), re.M)
        if m:
            total += int(m.group(1))
    return total / (rounds * clients) if total else float("nan")


def write_section(text: str, path: Path, begin: str, end: str) -> None:
    """Replaces the section of RESULTS.md between `begin` and `end` (which `text` starts
    and ends with), or puts it before the notes when there is none yet."""
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: text, old, flags=re.S)
    elif "## Notes on these numbers" in old:
        head, _, tail = old.partition("## Notes on these numbers")
        new = f"{head}{text}\n\n## Notes on these numbers{tail}"
    else:
        new = f"{old}\n{text}\n"
    path.write_text(new)


def median(values):
    vals = sorted(v for v in values if v == v)
    return vals[len(vals) // 2] if vals else float("nan")


def combine(runs: list[Result]) -> Result:
    """The median of each metric over repeated runs."""
    r = Result()
    for f in ("cpu_us", "user_us", "rps", "p50_ms", "p99_ms", "rss_mb", "idle_rss_mb", "idle_worker_rss_mb", "waiting",
              "conns_per_req"):
        setattr(r, f, median([getattr(x, f) for x in runs]))
    r.requests = sum(x.requests for x in runs)
    r.errors = "; ".join(sorted({x.errors for x in runs if x.errors}))
    return r


def fmt(v: float, digits=1) -> str:
    return "—" if v != v else f"{v:,.{digits}f}"


def p99_line(results, sc: Scenario, servers) -> str:
    """The peer with the lowest p99 among those that left no client waiting, against ferrule."""
    if not sc.timed:
        return "No latency columns: wrk times one response in each pipelined batch, so its percentiles mean nothing here."
    rows = {s: r for s in servers if (r := results.get((s, sc.name)))}
    fair = sorted((r.p99_ms, s) for s, r in rows.items()
                  if s not in ("ferrule", "floor") and r.waiting == 0 and r.p99_ms == r.p99_ms)
    left = [s for s, r in rows.items() if r.waiting > 0]  # nan compares false
    text = "Lowest p99 among the peers that left no client waiting: "
    text += f"{fair[0][1]} {fmt(fair[0][0], 2)} ms" if fair else "none"
    if "ferrule" in rows:
        text += f"; ferrule {fmt(rows['ferrule'].p99_ms, 2)} ms"
    if left:
        text += f". Left clients waiting through the run (their p99 counts only the clients they served): {', '.join(left)}"
    return text + "."


def floor_lines(results, sc: Scenario) -> list[str]:
    """ferrule's and bjoern's CPU per request above the socket floor, if it ran."""
    floor, ferrule, bjoern = (results.get((s, sc.name)) for s in ("floor", "ferrule", "bjoern"))
    if not (floor and ferrule and bjoern) or floor.cpu_us != floor.cpu_us:
        return []
    above = {s: r.cpu_us - floor.cpu_us for s, r in (("ferrule", ferrule), ("bjoern", bjoern))}
    sound = min(above.values()) > 0
    ratio = f"{above['ferrule'] / above['bjoern']:.2f}×" if sound else "no ratio"
    line = (f"Above the socket floor (`floor`: a C responder, one `recv` and one `send` a request, no "
            f"parsing, no app): ferrule {fmt(above['ferrule'], 2)} µs a request, bjoern "
            f"{fmt(above['bjoern'], 2)} µs ({ratio}). 0.8× bjoern's CPU is "
            f"{fmt(0.8 * bjoern.cpu_us, 2)} µs, {fmt(0.8 * bjoern.cpu_us - floor.cpu_us, 2)} µs above the floor.")
    if not sound:
        line += (" A server at or below the floor means the host's speed changed between the rows of "
                 "a round (compare the floor's own CPU with earlier runs); this run cannot say what it "
                 "spends above it.")
    return [line, ""]


def write_results(results, soak, instr, seconds, servers, repeat) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs. Server pinned to CPU {SERVER_CPU}, `wrk -t1` to CPU {LOAD_CPU}, "
        f"{seconds:g} s per run, median of {repeat} interleaved rounds, all servers in this one run. CPU µs/req = utime+stime of the server's "
        "process tree / requests completed, and its user-space part (utime; the rest is kernel time). Ratios are ferrule / peer (CPU: lower is better; RPS: higher). "
        "Left waiting: clients whose connection the server had not accepted at any of three samples from "
        "0.5 s after the start to 0.5 s before the end (median of the rounds; — when the accept queue never "
        "emptied while new connections kept coming, so the bench cannot tell); wrk counts only answered "
        "requests in its percentiles, so their wait is in no p99. Conns/req: connections the kernel "
        "completed towards the server per request (1 when each request comes on a new connection).",
        "",
        "ferrule runs with its defaults (a master and one worker; one thread runs the app, more only while "
        "all are blocked, up to 512). Peers: bjoern (1 thread), Granian "
        "(default, and `--blocking-threads 1`), gunicorn gthread 8 threads and sync (master and one worker "
        "each), uWSGI 8 threads, waitress 8 threads, pyruvate 8 threads. `floor` (hello only) is no WSGI "
        "server but the socket floor (`bench/floor.c`): a C responder that spends nothing above its one "
        "`recv` and one `send` a request.",
        "",
    ]
    for sc in SCENARIOS:
        lines += [f"## {sc.name}", "", f"`{sc.app}`, {sc.conns} connections"
                  + (f", `{sc.script}`" if sc.script else "") + (f", `{' '.join(sc.headers)}`" if sc.headers else ""), "",
                  "| server | CPU µs/req | of which user | RPS | p50 ms | p99 ms | left waiting | conns/req | RSS MB | ferrule CPU ratio "
                  "| ferrule RPS ratio | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        base = results.get(("ferrule", sc.name))
        for server in servers:
            r = results.get((server, sc.name))
            if r is None:
                continue
            cpu_ratio = base.cpu_us / r.cpu_us if base and r.cpu_us == r.cpu_us and r.cpu_us else float("nan")
            rps_ratio = base.rps / r.rps if base and r.rps else float("nan")
            lines.append(f"| {server} | {fmt(r.cpu_us)} | {fmt(r.user_us)} | {fmt(r.rps, 0)} | {fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} | "
                         f"{fmt(r.waiting, 0)} | {fmt(r.conns_per_req, 2)} | {fmt(r.rss_mb)} | {fmt(cpu_ratio, 2)} | {fmt(rps_ratio, 2)} | {r.errors or ''} |")
        lines += ["", p99_line(results, sc, servers), ""] + floor_lines(results, sc)
    lines += ["## Idle RSS (hello app, after one request)", "",
              "All processes of the server, and its largest process (the worker where there is a master).", "",
              "| server | idle RSS MB, all | idle RSS MB, worker |", "|---|---|---|"]
    for server in servers:
        r = results.get((server, "hello"))
        if r:
            lines.append(f"| {server} | {fmt(r.idle_rss_mb)} | {fmt(r.idle_worker_rss_mb)} |")
    lines.append("")
    if soak:
        lines += ["## ferrule RSS over a long hello run", "", "| requests | RSS MB |", "|---|---|"]
        lines += [f"| {n:,} | {fmt(m)} |" for n, m in soak]
        lines.append("")
    if instr:
        cases = list(next(iter(instr.values())))
        lines += ["## Instructions per request (callgrind)", "",
                  "Counters zeroed after 300 warm-up requests, then about 1,000 requests, all threads "
                  "counted; with 8 clients each sends a request, then all read their answers, so the "
                  "server finds 8 ready at once. Stable on a noisy machine: the regression check.", "",
                  "| server | " + " | ".join(CALLGRIND_LABELS[c] for c in cases) + " |",
                  "|---|" + "---|" * len(cases)]
        lines += [f"| {s} | " + " | ".join(fmt(v[c], 0) for c in cases) + " |" for s, v in instr.items()]
        base = instr.get("ferrule")
        if base and len(instr) > 1:
            for s, v in instr.items():
                if s != "ferrule":
                    lines += [f"| ferrule / {s} | " + " | ".join(f"{base[c] / v[c]:.2f}" for c in cases) + " |"]
        lines.append("")
    # The analysis of the numbers is written by hand and kept across runs.
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the table shows medians")
    ap.add_argument("--smoke", action="store_true", help="1 s per scenario, ferrule only, no soak/callgrind")
    ap.add_argument("--only", help="comma-separated servers")
    ap.add_argument("--scenarios", help="|-separated scenario names, exactly as in RESULTS.md")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--soak", type=int, default=1_000_000, help="requests in the RSS soak (0: none)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    servers = list(SERVERS) if not args.only else args.only.split(",")
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        ap.error(f"--only: unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    by_name = {s.name: s for s in SCENARIOS}
    wanted = args.scenarios.split("|") if args.scenarios else list(by_name)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        ap.error(f"--scenarios: unknown scenario(s) {unknown}; choose from {' | '.join(by_name)}")
    scenarios = [by_name[n] for n in wanted]
    seconds = args.seconds
    if args.smoke:
        servers, seconds, args.no_callgrind, args.soak, args.repeat = ["ferrule"], 1, True, 0, 1
    Path(os.environ.get("BENCH_FILE", "/tmp/ferrule-bench-1mb.bin")).write_bytes(os.urandom(1 << 20))
    runs: dict = {}
    # Repeats are interleaved (every server once per round), so a noisy minute on a
    # shared host hurts all servers alike; the table shows the median of the rounds.
    for round_ in range(args.repeat):
        for sc in scenarios:
            for server in servers:
                if server == "floor" and sc.name != FLOOR_SCENARIO:
                    continue
                r = measure(server, sc, seconds)
                runs.setdefault((server, sc.name), []).append(r)
                print(f"[{round_ + 1}/{args.repeat}] {sc.name:36} {server:18} cpu {fmt(r.cpu_us):>8} us/req (user {fmt(r.user_us):>6})  "
                      f"rps {fmt(r.rps, 0):>9}  p99 {fmt(r.p99_ms, 2):>8} ms  waiting {fmt(r.waiting, 0):>3}  conns/req {fmt(r.conns_per_req, 2):>5}  "
                      f"rss {fmt(r.rss_mb):>6} MB  {r.errors}",
                      flush=True)
    results = {k: combine(v) for k, v in runs.items()}
    soak = memory_soak(args.soak) if args.soak else []
    instr = {} if args.no_callgrind else {
        s: {c: instructions_per_request(s, *c) for c in CALLGRIND_LABELS} for s in ("ferrule", "bjoern") if s in servers}
    for s, v in instr.items():
        for c, n in v.items():
            print(f"callgrind {s} {CALLGRIND_LABELS[c]}: {fmt(n, 0)} instructions/request")
    text = write_results(results, soak, instr, seconds, servers, args.repeat)
    if not args.no_callgrind and "ferrule" in servers:
        import proxy_cost  # issue 23: what --proxy-protocol costs a keep-alive request
        proxy = proxy_cost.report(proxy_cost.measure(args.repeat, 1000))
        print("\n".join(f"callgrind --proxy-protocol {line}" for line in proxy))
        text += proxy_cost.section(proxy)
    if args.smoke:
        failed = [k for k, r in results.items() if not r.requests or r.errors.startswith("did not start")]
        print("smoke:", "ok" if not failed else f"failed {failed}")
        sys.exit(1 if failed else 0)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
