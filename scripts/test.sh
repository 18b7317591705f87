#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against real redis-server
# processes, differential tests, the Django end-to-end tests and the tool
# tests. Needs redis-server, redis-sentinel and redis-tools (redis-cli,
# redis-benchmark) and chromium (the status page test) on PATH; .ci/run
# installs them on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server redis-cli redis-benchmark python3 chromium; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install redis-server redis-tools python3-venv chromium" >&2; exit 1; }
done

scripts/setup-python.sh
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# Integration tests start several redis-servers each; two at a time suits a
# 2-core machine. (An env var, not --test-threads: the criterion bench, run
# once here as a smoke test, does not take that flag.)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RUST_TEST_THREADS=2 cargo test --lib --bins --tests --benches 2>&1 | tee "$log"
# One line with the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all test binaries: %d passed, %d failed\n", p, f }' "$log"
