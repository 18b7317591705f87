#!/usr/bin/env bash
# CPU per blocking pop of two session-proxy binaries: a queue's consumers
# sending BRPOP after BRPOP through the proxy, the list filled beforehand so
# that each is answered at once. One redis-server (TLS=1: over TLS, the
# proxy's backend connections too); each binary in front of it in turn (A,
# B, A, B, ...), after a run on Redis directly ("direct"). Per run: the proxy's and Redis's CPU microseconds per
# BRPOP (from /proc), the connections Redis accepted per 1,000 BRPOPs, and
# redis-benchmark's requests per second.
#   benches/blocking.sh target/ab/release/session-proxy target/release/session-proxy [PAIRS]
#   (C= consumers, 20; N= pops per run, 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?usage: benches/blocking.sh BINARY_A BINARY_B [PAIRS]}
b=${2:?usage: benches/blocking.sh BINARY_A BINARY_B [PAIRS]}
pairs=${3:-3}
consumers=${C:-20}
pops=${N:-50000}
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis=$(free_port)
cli=(redis-cli -p "$redis")
backend="address = \"127.0.0.1:$redis\""
if [ "${TLS:-0}" = 1 ]; then
  benches/certs.sh "$work"
  redis-server --port 0 --tls-port "$redis" --tls-cert-file "$work/server.crt" \
    --tls-key-file "$work/server.key" --tls-ca-cert-file "$work/ca.crt" --tls-auth-clients no \
    --save "" --appendonly no --dir "$work" --daemonize yes --pidfile "$work/redis.pid" >/dev/null
  cli+=(--tls --cacert "$work/ca.crt")
  backend="$backend
tls = { ca = \"$work/ca.crt\" }"
else
  redis-server --port "$redis" --save "" --appendonly no --dir "$work" --daemonize yes \
    --pidfile "$work/redis.pid" >/dev/null
fi
trap '"${cli[@]}" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do "${cli[@]}" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis_pid=$(cat "$work/redis.pid")
# utime + stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
accepted() { "${cli[@]}" info stats | tr -d '\r' | awk -F: '/^total_connections_received:/ {print $2}'; }
tick_us=$((1000000 / $(getconf CLK_TCK)))
# One run of pops from `bench` (redis-benchmark's address arguments) with
# process `pid` in front of Redis (Redis itself for a direct run): prints
# the line for `side`.
run() {
  local side=$1 pid=$2; shift 2
  # Items for every pop (and the warm-up's).
  redis-benchmark "$@" -c 10 -n $((pops + 2000)) -q RPUSH jobs item >/dev/null
  redis-benchmark "$@" -c "$consumers" -n 1000 -q BRPOP jobs 1 >/dev/null
  p0=$(ticks "$pid"); r0=$(ticks "$redis_pid"); c0=$(accepted)
  rate=$(redis-benchmark "$@" -c "$consumers" -n "$pops" -q BRPOP jobs 1 | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
  p1=$(ticks "$pid"); r1=$(ticks "$redis_pid"); c1=$(accepted)
  "${cli[@]}" del jobs >/dev/null
  [ "$pid" = "$redis_pid" ] && p0=$p1
  awk -v side="$side" -v p=$((p1 - p0)) -v r=$((r1 - r0)) -v c=$((c1 - c0)) -v n="$pops" -v t="$tick_us" -v rate="$rate" \
    'BEGIN { printf "%s: proxy %.1f us/BRPOP, redis %.1f us/BRPOP, %.1f connections per 1000, %s\n", side, p * t / n, r * t / n, c * 1000 / n, rate }'
}
for _ in $(seq "$pairs"); do
  run direct "$redis_pid" "${cli[@]:1}"
  for side in A B; do
    bin=$a; [ "$side" = B ] && bin=$b
    port=$(free_port)
    printf '[listen]\naddress = "127.0.0.1:%s"\n[[backends]]\nid = "a"\n%s\n' "$port" "$backend" > "$work/proxy.toml"
    "$bin" --config "$work/proxy.toml" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    run "$side" "$pid" -p "$port"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
