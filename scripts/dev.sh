#!/usr/bin/env bash
# A working local setup on a fresh machine: installs redis-server if missing,
# starts two Redis backends on 127.0.0.1:7001 and :7002 (data in a temp dir,
# stopped when this script ends), builds the proxy and runs it in the
# foreground on 127.0.0.1:6380 with config/local.toml. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools
fi

data=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT

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

cargo build --release --quiet
echo "session-proxy on 127.0.0.1:6380 (try: redis-cli -p 6380 set session:hello world)" >&2
target/release/session-proxy --config config/local.toml
