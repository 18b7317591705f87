#!/usr/bin/env bash
# User-space instructions per request of session-proxy binaries, counted by
# valgrind's callgrind (deterministic where timings on a shared VM are not):
# each binary in front of two redis-servers, a warm-up, then N GETs of
# 400-byte values from redis-benchmark (C connections, pipeline P; C=1
# keeps the batches the same from run to run). Needs valgrind
# (apt-get install valgrind).
#   benches/instructions.sh target/ab/release/session-proxy target/release/session-proxy
#   C=50 N=200000 benches/instructions.sh A B
# KEEP=DIR keeps each binary's callgrind profile as DIR/<n>.out, for
# callgrind_annotate. The word redis-server in place of a binary counts a
# Redis server's own instructions per GET under the same load (redis-benchmark
# straight at it, its keys set the same way), and nutcracker twemproxy's
# (in front of the same two servers), for comparison:
#   C=50 P=1 N=50000 benches/instructions.sh redis-server nutcracker target/release/session-proxy
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: benches/instructions.sh BINARY..." >&2; exit 2; }
N=${N:-100000}; C=${C:-1}; P=${P:-16}
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
r1=$(free_port); r2=$(free_port)
for port in $r1 $r2; do
  redis-server --port "$port" --save "" --appendonly no --dir "$work" --dbfilename "$port.rdb" --daemonize yes >/dev/null
  redis-benchmark -p "$port" -t set -n 100000 -P 16 -d 400 -r 100000 -q >/dev/null
done
trap 'redis-cli -p $r1 shutdown nosave >/dev/null 2>&1 || true; redis-cli -p $r2 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for bin in "$@"; do
  port=$(free_port)
  if [ "$bin" = redis-server ]; then
    # The slowlog off, as for the proxy.
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" redis-server --port "$port" \
      --save "" --appendonly no --dir "$work" --dbfilename "$port.rdb" --slowlog-log-slower-than -1 \
      >/dev/null 2>"$work/vg.log" &
    pid=$!
  elif [ "$bin" = nutcracker ]; then
    printf 'pool:\n  listen: 127.0.0.1:%s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - 127.0.0.1:%s:1\n   - 127.0.0.1:%s:1\n' \
      "$port" "$r1" "$r2" > "$work/nutcracker.yml"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" nutcracker -c "$work/nutcracker.yml" >/dev/null 2>"$work/vg.log" &
    pid=$!
  else
    # The slowlog off: under valgrind every request would be "slow".
    printf '[slowlog]\nslower_than_us = -1\n[listen]\naddress = "127.0.0.1:%s"\n[[backends]]\nid = "a"\naddress = "127.0.0.1:%s"\n[[backends]]\nid = "b"\naddress = "127.0.0.1:%s"\n' \
      "$port" "$r1" "$r2" > "$work/proxy.toml"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin" --config "$work/proxy.toml" >/dev/null 2>"$work/vg.log" &
    pid=$!
  fi
  for _ in $(seq 400); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  # A Redis measured straight gets its keys as the two behind the proxies did.
  [ "$bin" != redis-server ] || redis-benchmark -p "$port" -t set -n 100000 -P 16 -d 400 -r 100000 -q >/dev/null
  redis-benchmark -p "$port" -t get -c "$C" -n 20000 -P "$P" -d 400 -r 100000 -q >/dev/null
  callgrind_control -z "$pid" >/dev/null
  redis-benchmark -p "$port" -t get -c "$C" -n "$N" -P "$P" -d 400 -r 100000 -q >/dev/null
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  total=$(callgrind_annotate "$work/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$bin: $(( total / N )) instructions per GET (C=$C, P=$P, N=$N)"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; n=$(( ${n:-0} + 1 )); cp "$work/cg.out.1" "$KEEP/$n.out"; fi
  rm -f "$work"/cg.out*
done
