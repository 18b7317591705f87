#!/usr/bin/env bash
# SLOWLOG memory: the proxy's RSS before and after 20 slow SETs of 20 MB,
# after deleting the keys, and after SLOWLOG RESET. With entries that own
# their truncated arguments, deleting the keys gives the memory back and
# RESET changes nothing; when entries held views into the requests, only
# RESET did. Prints one line per step (RSS in MiB, from /proc).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin session-proxy
dir=$(mktemp -d)
redis_port=7411; proxy_port=7412
redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" >/dev/null
cat > "$dir/proxy.toml" <<TOML
[listen]
address = "127.0.0.1:$proxy_port"
[slowlog]
slower_than_us = 0
[[backends]]
id = "a"
address = "127.0.0.1:$redis_port"
TOML
target/release/session-proxy --config "$dir/proxy.toml" 2>/dev/null &
proxy=$!
trap 'kill $proxy 2>/dev/null; kill "$(cat "$dir/redis.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p $proxy_port PING >/dev/null 2>&1; do sleep 0.1; done
rss() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' /proc/$proxy/status; }
head -c 20000000 /dev/zero | tr '\0' v > "$dir/value"
echo "start:                 $(rss) MiB"
for i in $(seq 1 20); do redis-cli -p $proxy_port -x SET "session:big$i" < "$dir/value" >/dev/null; done
echo "after 20 SETs of 20 MB: $(rss) MiB (slowlog entries: $(redis-cli -p $proxy_port SLOWLOG LEN))"
for i in $(seq 1 20); do redis-cli -p $proxy_port DEL "session:big$i" >/dev/null; done
echo "after deleting them:   $(rss) MiB"
redis-cli -p $proxy_port SLOWLOG RESET >/dev/null
echo "after SLOWLOG RESET:   $(rss) MiB"
