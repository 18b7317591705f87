#!/usr/bin/env bash
# The Redis Cluster benchmark in one command: installs redis if missing,
# builds the release binary and prints the table of benches/cluster.py (the
# proxy over a 3-master cluster against redis-benchmark --cluster on the same
# nodes). ROUNDS=n and REQUESTS=n change its length (defaults 3 and 500000).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools
fi
echo "== cluster.sh: building the release binary" >&2
cargo build --release --bin session-proxy
echo "== cluster.sh: running (each round prints a line on stderr)" >&2
python3 benches/cluster.py
