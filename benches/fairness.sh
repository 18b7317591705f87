#!/usr/bin/env bash
# The fairness benchmark in one command: installs redis if missing, builds the
# release binary and examples/fairness.rs, and prints the table of
# benches/fairness.py (a normal client beside heavy pipelining clients,
# through the proxy and directly on Redis). ROUNDS=n and SECONDS_PER_RUN=n
# change its length (defaults 3 and 8: about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi
echo "== fairness.sh: building the release binary and the load generator" >&2
cargo build --release --bin session-proxy --example fairness
echo "== fairness.sh: running (each run prints a line on stderr)" >&2
python3 benches/fairness.py
