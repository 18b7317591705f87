#!/usr/bin/env bash
# The migration benchmark in one command: installs redis if missing, builds
# the release binary and prints the table of benches/migration.py (GET that
# moves a key, GET during a migration, GET without one; the mover's keys per
# second). ROUNDS=n, KEYS=n and MOVER_KEYS=n change its length (defaults 3,
# 5000 and 50000: about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi
echo "== migration.sh: building the release binary" >&2
cargo build --release --bin session-proxy
echo "== migration.sh: running (each round prints a line on stderr)" >&2
python3 benches/migration.py
