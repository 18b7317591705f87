#!/usr/bin/env bash
# CPU per request of two session-proxy binaries under examples/loadgen.rs's
# Django-like mix: two redis-servers, each binary in front of both in turn
# (A, B, A, B, ...), `perf stat -e task-clock` on the proxy during 300,000
# requests from 50 connections. Prints the proxy's CPU milliseconds and the
# loadgen's summary per run. Build both first (benches/ab.sh leaves REV's in
# target/ab/release/).
#   benches/cpu_ab.sh target/ab/release/session-proxy target/release/session-proxy [PAIRS]
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?usage: benches/cpu_ab.sh BINARY_A BINARY_B [PAIRS]}
b=${2:?usage: benches/cpu_ab.sh BINARY_A BINARY_B [PAIRS]}
pairs=${3:-4}
loadgen=target/release/examples/loadgen
[ -x "$loadgen" ] || cargo build --release --example loadgen >&2
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
r1=$(free_port); r2=$(free_port)
for port in $r1 $r2; do
  redis-server --port "$port" --save "" --appendonly no --dir "$work" --dbfilename "$port.rdb" --daemonize yes >/dev/null
done
trap 'redis-cli -p $r1 shutdown nosave >/dev/null 2>&1 || true; redis-cli -p $r2 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq "$pairs"); do
  for side in A B; do
    bin=$a; [ "$side" = B ] && bin=$b
    port=$(free_port)
    printf '[listen]\naddress = "127.0.0.1:%s"\n[[backends]]\nid = "a"\naddress = "127.0.0.1:%s"\n[[backends]]\nid = "b"\naddress = "127.0.0.1:%s"\n' \
      "$port" "$r1" "$r2" > "$work/proxy.toml"
    "$bin" --config "$work/proxy.toml" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    "$loadgen" --port "$port" --connections 50 --requests 20000 >/dev/null 2>&1
    perf stat -x, -e task-clock -p "$pid" -o "$work/perf.txt" &
    perf_pid=$!
    sleep 0.2
    summary=$("$loadgen" --port "$port" --connections 50 --requests 300000 2>&1 | tail -1)
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$side: proxy CPU ms $(grep task-clock "$work/perf.txt" | cut -d, -f1) :: $summary"
  done
done
