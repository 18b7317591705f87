#!/usr/bin/env bash
# Syscalls and CPU per request of session-proxy binaries, counted by the
# kernel (`perf stat` on the proxy's syscall tracepoints, so the count does
# not slow the proxy as strace does): each binary in front of one
# redis-server, a warm-up, then N GETs of 400-byte values from
# redis-benchmark (50 clients, pipeline P), with TLS=1 over TLS on both
# sides (the client's listener and the backend). Interleaved ROUNDS times;
# prints one line per run. PROFILE=1 also samples the proxy's stacks
# (`perf record --call-graph dwarf`) and prints where its CPU went: each
# syscall (with the kernel work it runs, such as the loopback delivery a
# send does) and user space. Needs perf (apt-get install linux-perf) and
# permission to trace (root, or kernel.perf_event_paranoid <= 1).
#   benches/syscalls.sh target/ab/release/session-proxy target/release/session-proxy
#   TLS=1 P=16 N=1000000 ROUNDS=3 benches/syscalls.sh A B
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: benches/syscalls.sh BINARY..." >&2; exit 2; }
N=${N:-200000}; P=${P:-1}; TLS=${TLS:-0}; ROUNDS=${ROUNDS:-1}
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
plain=$(free_port); secure=$(free_port)
redis_args=(--port "$plain" --bind 127.0.0.1 --save "" --appendonly no --dir "$work")
bench_tls=()
if [ "$TLS" = 1 ]; then
  benches/certs.sh "$work"
  redis_args+=(--tls-port "$secure" --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key"
               --tls-ca-cert-file "$work/ca.crt" --tls-auth-clients no)
  bench_tls=(--tls --cacert "$work/ca.crt")
fi
redis-server "${redis_args[@]}" --daemonize yes >/dev/null
trap 'redis-cli -p $plain shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do redis-cli -p "$plain" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -p "$plain" -t set -c 50 -n 300000 -P 16 -d 400 -r 100000 -q >/dev/null
events=syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,task-clock
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    port=$(free_port); listen=$port
    if [ "$TLS" = 1 ]; then
      listen=$(free_port)
      printf '[listen]\naddress = "127.0.0.1:%s"\ntls = { address = "127.0.0.1:%s", cert = "%s", key = "%s" }\n[[backends]]\nid = "a"\nurl = "rediss://127.0.0.1:%s"\ntls = { ca = "%s" }\n' \
        "$listen" "$port" "$work/server.crt" "$work/server.key" "$secure" "$work/ca.crt" > "$work/proxy.toml"
    else
      printf '[listen]\naddress = "127.0.0.1:%s"\n[[backends]]\nid = "a"\naddress = "127.0.0.1:%s"\n' \
        "$port" "$plain" > "$work/proxy.toml"
    fi
    "$bin" --config "$work/proxy.toml" >/dev/null 2>&1 &
    pid=$!
    bench=(redis-benchmark -p "$port" "${bench_tls[@]}" -t get -c 50 -P "$P" -d 400 -r 100000 -q)
    for _ in $(seq 100); do redis-cli -p "$listen" ping >/dev/null 2>&1 && break; sleep 0.1; done
    "${bench[@]}" -n 100000 >/dev/null
    perf stat -x, -e "$events" -p "$pid" -o "$work/stat.csv" &
    perf=$!
    if [ "${PROFILE:-0}" = 1 ]; then
      perf record -q --call-graph dwarf,8192 -F 1000 -p "$pid" -o "$work/perf.data" 2>/dev/null &
      record=$!
    fi
    "${bench[@]}" -n "$N" >/dev/null
    kill -INT "$perf"; wait "$perf" || true
    if [ "${PROFILE:-0}" = 1 ]; then
      kill -INT "$record"; wait "$record" || true
      perf script -i "$work/perf.data" -F ip,sym,dso 2>/dev/null | python3 -c '
import collections, sys
shares, samples = collections.Counter(), 0
for stack in sys.stdin.read().split("\n\n"):
    # Each frame: address, symbol, (object); the leaf first.
    frames = [f.strip().split(None, 1)[-1] for f in stack.strip().splitlines() if f.strip()]
    if not frames:
        continue
    samples += 1
    where = "kernel, outside a syscall" if "kernel.kallsyms" in frames[0] else "user space"
    for i, frame in enumerate(frames):
        if "entry_SYSCALL_64" in frame:
            where = frames[i + 1].split(" (")[0] if i + 1 < len(frames) else "?"
            break
    shares[where] += 1
print("  where the CPU went: " + ", ".join(
    f"{name} {100 * n / samples:.1f}%" for name, n in shares.most_common(6)))'
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$work/stat.csv" "$N" "$bin" "$round" "$P" "$TLS" <<'EOF'
import sys
path, n, binary, round_, p, tls = sys.argv[1:]
n = int(n)
counts = {}
for line in open(path):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0] and not line.startswith("#"):
        counts[fields[2].split(":")[-1]] = float(fields[0])
per = {k.replace("sys_enter_", ""): v / n for k, v in counts.items()}
cpu_us = counts.get("task-clock", 0) / n * 1000  # task-clock is in ms
print(f"round {round_} P={p} TLS={tls} {binary}: per request: "
      + " ".join(f"{k} {v:.3f}" for k, v in per.items() if k != "task-clock")
      + f"; CPU {cpu_us:.2f} us")
EOF
  done
done
