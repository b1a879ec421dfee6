"""What `--proxy-protocol` costs a keep-alive request (issue 23: "no measurable cost").

Callgrind's instructions per request (`bench.instructions_per_request`) for the hello app
over keep-alive connections, `--proxy-protocol` off against v1 with one header sent first
on each connection, as HAProxy's `send-proxy` does. The rounds interleave the two, so
both see the same host; the medians and their ratio are printed.

Usage: python bench/proxy_cost.py [--rounds N] [--requests N]; `make bench` runs it too
(`bench.py`, with its callgrind table).
"""

from __future__ import annotations

import argparse

from bench import instructions_per_request, median



def header(i: int) -> bytes:
    """Connection `i`'s header: a port of its own, as real clients have (the bridge keeps
    the last client's REMOTE_PORT per thread, so one port for all would flatter v1)."""
    return f"PROXY TCP4 203.0.113.7 127.0.0.1 {40000 + i} 8000\r\n".encode()


#: (label, `ferrule.run` keywords, what each connection sends first)
SETUPS = (("off", "", None), ("v1", "proxy_protocol='v1'", header))
CLIENTS = (1, 8)


def measure(rounds: int, requests: int) -> dict:
    """{(setup, clients): [instructions per request, one a round]}."""
    got: dict = {}
    for r in range(rounds):
        for clients in CLIENTS:
            for label, options, preamble in SETUPS:
                n = instructions_per_request("ferrule", "hello", clients, requests, options, preamble)
                got.setdefault((label, clients), []).append(n)
                print(f"[{r + 1}/{rounds}] hello, {clients} client(s), proxy_protocol {label}: "
                      f"{n:,.0f} instructions/request", flush=True)
    return got


def report(got: dict) -> list:
    lines = []
    for clients in CLIENTS:
        off, on = median(got[("off", clients)]), median(got[("v1", clients)])
        lines.append(f"hello, {clients} client(s): off {off:,.0f}, v1 {on:,.0f} instructions/request "
                     f"({on / off:.3f}x)")
    return lines


def section(lines: list) -> str:
    """The lines as a RESULTS.md section (`bench.py` appends it after its notes)."""
    return ("\n## PROXY protocol per keep-alive request (callgrind, `bench/proxy_cost.py`)\n\n"
            + "".join(f"- {line}\n" for line in lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    for line in report(measure(args.rounds, args.requests)):
        print(line)


if __name__ == "__main__":
    main()
