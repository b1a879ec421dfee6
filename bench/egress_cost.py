"""Issue 25: what `--egress-log` adds to a hello request, in instructions (callgrind).

valgrind does not implement seccomp(2), so the "on" runs set FERRULE_BENCH_EGRESS_UNFILTERED=1:
egress then starts without its filter (the worker says so in its log) and every request pays
the user-space part (slot, id, environ key); the filter's own cost is in the kernel, which
callgrind does not count. Usage: python egress_cost.py ROUNDS LABEL=PYTHON ...
(each PYTHON a venv with ferrule installed; rounds interleaved, medians printed)."""
import os
import statistics
import subprocess
import sys

SCEN = [("hello", 1), ("hello", 8)]
MODES = {"off": "", "on": "egress_log='/dev/null'"}


def one(py: str, app: str, clients: int, options: str) -> float:
    code = ("import sys; sys.path.insert(0, '.'); import bench; "
            f"print(bench.instructions_per_request('ferrule', {app!r}, {clients}, options={options!r}))")
    env = {**os.environ, "FERRULE_BENCH_EGRESS_UNFILTERED": "1"}
    out = subprocess.run([py, "-c", code], cwd=os.path.dirname(os.path.abspath(__file__)), env=env,
                         capture_output=True, text=True, timeout=900)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def main() -> None:
    rounds = int(sys.argv[1])
    builds = [a.split("=", 1) for a in sys.argv[2:]]
    seen: dict = {}
    for r in range(rounds):
        for label, py in builds:
            for app, c in SCEN:
                for mode, options in MODES.items():
                    n = one(py, app, c, options)
                    seen.setdefault((label, app, c, mode), []).append(n)
                    print(f"round={r + 1} build={label} {app}:{c} {mode} instr={n:.0f}", flush=True)
    for (label, app, c, mode), ns in seen.items():
        print(f"median build={label} {app}:{c} {mode}: {statistics.median(ns):.0f} ({', '.join(f'{n:.0f}' for n in ns)})")


if __name__ == "__main__":
    main()
