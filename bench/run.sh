#!/usr/bin/env bash
# DNS throughput and latency of dnsdisc, measured with dnsperf on the shared data set.
#
#   bench/run.sh            dnsdisc alone: starts it, fills it over HTTP, runs dnsperf in the
#                           max / deep / rate modes, prints QPS, loss and p50/p99 latency
#   bench/run.sh --peers    the same, side by side with dnsmasq, NSD and Knot (1 and 2 workers)
#
# Both drive ../shared/bench/run_peers.sh (see its README for the knobs: ROUNDS, DURATION,
# MODES, DNSDISC_ARGS, DNSDISC_POLICY, ...), with dnsdisc from this checkout's .venv
# (run ./scripts/test.sh or the quick start once first). Results go to bench/out/<timestamp>/;
# record the figures with the command and date in docs/benchmarks.md. Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
[ -x "$SHARED/run_peers.sh" ] || { echo "no $SHARED/run_peers.sh (../shared beside the repo)" >&2; exit 2; }
[ -x "$ROOT/.venv/bin/python" ] || { echo "no .venv: run ./scripts/test.sh first" >&2; exit 2; }
if [ "${1:-}" = "--peers" ]; then
  export SERVERS=${SERVERS:-"dnsmasq nsd nsd-x2 knot knot-x2 dnsdisc"}
else
  export SERVERS=${SERVERS:-dnsdisc}
fi
export DNSDISC_CMD="$ROOT/.venv/bin/python -m dnsdisc"
export OUT=${OUT:-$ROOT/bench/out/$(date +%Y%m%d-%H%M%S)}
cd "$ROOT"
exec "$SHARED/run_peers.sh"
