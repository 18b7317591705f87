#!/usr/bin/env bash
# The load benchmark in one command: installs redis and twemproxy (nutcracker)
# if missing, builds the release binary and the load generator, prints the
# comparison table (benches/load.py) and renders it as SVG charts in docs/
# (benches/charts.py, with matplotlib in target/venv-bench). ROUNDS=n changes
# the round count.
#
# `benches/load.sh --manycore` is the many-core mode (issue 16): it bundles the
# release binary, Redis, redis-benchmark, twemproxy and their shared libraries
# into target/manycore/ (benches/bundle.sh) and runs target/manycore/manycore.sh
# there; copy that folder to a machine where nothing is installed and run
# manycore.sh in it for the same table.
#
# `benches/load.sh --tls` is the TLS mode (issue 31): direct Redis over its
# plain and TLS ports against the proxy's plain and TLS listeners, over
# plain and TLS backends, CPU per request beside throughput
# (benches/tls.py; BASELINE=path adds another build of the proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--manycore" ]; then
  benches/bundle.sh
  exec target/manycore/manycore.sh
fi
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v nutcracker >/dev/null || missing+=(nutcracker)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
echo "== load.sh: building the release binary and the load generator" >&2
cargo build --release --bin session-proxy --example loadgen
if [ "${1:-}" = "--tls" ]; then
  echo "== load.sh: the TLS table (each round prints a line on stderr)" >&2
  exec python3 benches/tls.py
fi
venv=target/venv-bench
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "== load.sh: matplotlib into $venv (for the charts)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'matplotlib>=3.7,<4'
fi
echo "== load.sh: running (each round prints a line on stderr)" >&2
python3 benches/load.py
"$venv/bin/python" benches/charts.py
