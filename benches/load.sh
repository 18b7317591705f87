#!/usr/bin/env bash
# The load benchmark in one command: installs redis and twemproxy (nutcracker)
# if missing, builds the release binary and the load generator, and prints
# the comparison table (benches/load.py). ROUNDS=n changes the round count.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v nutcracker >/dev/null || missing+=(nutcracker)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
cargo build --release --quiet --bin session-proxy --example loadgen
exec python3 benches/load.py
