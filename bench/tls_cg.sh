#!/usr/bin/env bash
# Callgrind instructions per keep-alive request of ferrule over plain HTTP and over TLS,
# interleaved rounds (/work/wt/cg.sh's scheme, with a transport axis):
#   ROUNDS=3 SCEN="hello:1 hello:8" bench/tls_cg.sh LABEL=VENV_PYTHON ...
# One line per count, then the medians over rounds and the TLS/plain ratio.
ROUNDS=${ROUNDS:-3}
SCEN=${SCEN:-"hello:1 hello:8"}
HERE=$(cd "$(dirname "$0")" && pwd)
LOG=$(mktemp /tmp/tls-cg.XXXXXX)
for r in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    label=${spec%%=*}; py=${spec#*=}
    for s in $SCEN; do
      app=${s%%:*}; c=${s##*:}
      for transport in plain tls; do
        tls=$([ "$transport" = tls ] && echo True || echo False)
        n=$(cd "$HERE" && "$py" -c "import tls; print(round(tls.instructions_per_request('$app', $c, $tls)))" 2>/dev/null)
        echo "round=$r build=$label app=$app clients=$c transport=$transport instr=$n" | tee -a "$LOG"
      done
    done
  done
done
python3 - "$LOG" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = dict(kv.split("=", 1) for kv in line.split())
    if d.get("instr", "").isdigit():
        rows.setdefault((d["build"], d["app"], d["clients"], d["transport"]), []).append(int(d["instr"]))
for (b, a, c, t) in sorted(k for k in rows if k[3] == "plain"):
    plain = statistics.median(rows[(b, a, c, "plain")])
    tls = statistics.median(rows.get((b, a, c, "tls"), [float("nan")]))
    print(f"build={b} app={a} clients={c} plain={plain:.0f} tls={tls:.0f} tls/plain={tls / plain:.2f}")
PY
