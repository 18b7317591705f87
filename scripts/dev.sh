#!/usr/bin/env bash
# A working local setup on a fresh machine: installs redis-server if missing,
# starts two Redis backends on 127.0.0.1:7001 and :7002 (data in a temp dir),
# builds the proxy and runs it on 127.0.0.1:6380 with config/local.toml
# (status page and metrics on http://127.0.0.1:9180/). Ctrl-C, SIGTERM or
# SIGHUP to this script stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
phase() { echo "== dev.sh [$(( $(date +%s) - started ))s] $*" >&2; }

phase "1/4 prerequisites"
if ! command -v cargo >/dev/null; then
  echo "missing cargo: install Rust with rustup (https://rustup.rs) or apt-get install cargo" >&2
  exit 1
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  phase "installing redis-server and redis-tools (apt-get)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools
fi

data=$(mktemp -d)
pids=()
cleanup() {
  trap - EXIT INT TERM HUP
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

phase "2/4 Redis backends on 127.0.0.1:7001 and :7002"
for port in 7001 7002; do
  mkdir -p "$data/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$data/$port" --logfile "$data/$port/redis.log" &
  pids+=($!)
done
for port in 7001 7002; do
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done

phase "3/4 cargo build --release (first build: about 5-15 minutes on a 2-core machine)"
cargo build --release

phase "4/4 session-proxy on 127.0.0.1:6380, status page on http://127.0.0.1:9180/"
echo "try: redis-cli -p 6380 set session:hello world; stop with Ctrl-C" >&2
# In the background and waited for, so a signal to this script reaches the
# traps above (a foreground child would delay them until it exits).
target/release/session-proxy --config config/local.toml &
pids+=($!)
wait "${pids[-1]}"
