"""Issue 25: what `--egress-log` adds to a hello request, function by function (callgrind).

Whole-request counts move by more than egress costs between any two runs (REMOTE_PORT's
str cache: one str per port modulo 64, made again when two clients collide; the hash seed;
the runner's polling), so this sums, on minus off, only the functions egress's per-request
work lies in: `Wsgi::call` (which inlines `begin`, the `X-Request-ID` lookup and the end),
`Environ::build_in` (the id's refill) and the `memcpy` and `__tls_get_addr` they call. Lines
of those functions from the port cache (`itoa`, `environ/strings.rs`) are left out.
Usage: python egress_attr.py PYTHON [CLIENTS...]   (run with the bench's venv python or
any python: the server runs under PYTHON, a venv with ferrule installed)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS = {"off": "", "on": "egress_log='/dev/null'"}
ON_PATH = ("Wsgi::call", "Environ::build_in", "Live::set_request_id", "sys::refill")
NOISE = ("itoa", "environ/strings.rs", "maybe_uninit.rs")


def dump(py: str, clients: int, options: str, into: str) -> str:
    """Runs one callgrind measure and moves its dumps into `into`; returns their prefix."""
    code = ("import glob, os, shutil, sys; sys.path.insert(0, '.'); import bench; "
            f"bench.instructions_per_request('ferrule', 'hello', {clients}, options={options!r}); "
            f"[shutil.move(f, os.path.join({into!r}, os.path.basename(f))) for f in "
            "glob.glob(f'/tmp/ferrule-callgrind-ferrule-{os.getpid()}.*.*')]; print(os.getpid())")
    env = {**os.environ, "FERRULE_BENCH_EGRESS_UNFILTERED": "1"}
    out = subprocess.run([py, "-c", code], cwd=HERE, env=env, capture_output=True, text=True, timeout=900)
    return os.path.join(into, f"ferrule-callgrind-ferrule-{out.stdout.strip()}")


def functions(prefix: str) -> dict:
    """Self instructions by `file:function` (inlined code under its own file) of the dumps."""
    seen: dict = {}
    for path in (p for p in os.listdir(os.path.dirname(prefix)) if p.startswith(os.path.basename(prefix))):
        out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no",
                              os.path.join(os.path.dirname(prefix), path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*([\d,]+) (?:\(\s*[\d.]+%\)\s+)?(.*)", line)
            if m and not m.group(2).startswith("=>"):
                name = re.sub(r"\s*\[.*\]$", "", m.group(2))
                seen[name] = seen.get(name, 0) + int(m.group(1).replace(",", ""))
    return seen


def egress_part(name: str) -> bool:
    on_path = ":_ferrule::" in name and any(f in name for f in ON_PATH)
    return (on_path and not any(n in name for n in NOISE)) or "__memcpy" in name or "tls_get_addr" in name


def main() -> None:
    py, clients = sys.argv[1], [int(c) for c in sys.argv[2:]] or [1, 8]
    for c in clients:
        with tempfile.TemporaryDirectory() as tmp:
            off, on = (functions(dump(py, c, OPTIONS[m], tmp)) for m in ("off", "on"))
        requests = 1000  # instructions_per_request's n, in whole rounds of `c` clients
        requests = max(1, requests // c) * c
        rows = sorted(((on.get(k, 0) - off.get(k, 0)) / requests, k) for k in set(off) | set(on) if egress_part(k))
        for added, name in sorted(rows, key=lambda r: -abs(r[0])):
            if abs(added) >= 1:
                print(f"{added:8.1f}  {name[-100:]}")
        print(f"hello:{c} egress on, attributed: {sum(a for a, _ in rows):.1f} instructions a request")


if __name__ == "__main__":
    main()
