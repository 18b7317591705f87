#!/usr/bin/env bash
# The many-core benchmark (issue 16): session-proxy with several threads and
# with one, and twemproxy, against the backends' own limit, on separate cores,
# in one run. Layout on a machine with 16 or more cores: 4 Redis backends on
# cores 0-3, the proxy under test on cores 4-9, redis-benchmark with 6 threads
# on cores 10-15; 200 clients, 400-byte values, 100,000 random keys, SET and
# GET at pipeline 1 and 16, ROUNDS interleaved rounds (default 3), medians.
# "Backends' limit": one redis-benchmark per backend at once, the same 200
# clients in all. CPU seconds per million requests of the proxy process, from
# /proc. On fewer cores the layout is squeezed (a smoke run, not a figure).
#
# Needs nothing installed: run it from the folder benches/bundle.sh makes
# (bin/ with session-proxy, redis-server, redis-benchmark, nutcracker; lib/
# with their shared libraries), or from the repository with them on PATH.
#   benches/bundle.sh && target/manycore/manycore.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# From a bundle, every tool runs under the bundled dynamic loader with the
# bundled libraries (glibc included), whatever the machine has.
loader=$here/lib/ld-linux-x86-64.so.2
tool() { # name: the command words that run it
  if [ -x "$loader" ] && [ -e "$here/bin/$1" ]; then
    echo "$loader --library-path $here/lib $here/bin/$1"
  elif [ "$1" = session-proxy ] && ! command -v session-proxy >/dev/null; then
    echo "$here/../target/release/session-proxy"
  else
    command -v "$1" || { echo "manycore.sh: $1 not found" >&2; exit 1; }
  fi
}
REDIS_SERVER=$(tool redis-server); REDIS_BENCHMARK=$(tool redis-benchmark)
NUTCRACKER=$(tool nutcracker); PROXY=$(tool session-proxy)
TASKSET=$(command -v taskset || tool taskset)
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-200}
N_P1=${N_P1:-2000000}
N_P16=${N_P16:-10000000}
cores=$(nproc)
if [ "$cores" -ge 16 ]; then
  backend_cores=(0 1 2 3); proxy_cores="4-9"; load_cores="10-15"; threads=6; load_threads=6
else
  # Smoke layout: everything shares the cores.
  backend_cores=(0 0 0 0); proxy_cores="0-$((cores - 1))"; load_cores="0-$((cores - 1))"
  threads=$cores; load_threads=$cores
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $((20000 + RANDOM % 20000)); }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
log() { echo "== manycore.sh: $*" >&2; }

log "$cores cores: backends on ${backend_cores[*]}, proxies on $proxy_cores ($threads threads), load on $load_cores ($load_threads threads)"
backend_ports=()
for i in 0 1 2 3; do
  port=$(free_port); backend_ports+=("$port")
  $TASKSET -c "${backend_cores[$i]}" $REDIS_SERVER --port "$port" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$work" >/dev/null & pids+=($!)
done
for port in "${backend_ports[@]}"; do wait_port "$port"; done

start_proxy() { # name threads: sets PORT and PID
  local name=$1 n=$2; PORT=$(free_port)
  local port=$PORT
  { printf '[listen]\naddress = "127.0.0.1:%s"\n[runtime]\nthreads = %s\n[limits]\nmax_clients = 20000\n' "$port" "$n"
    for i in 0 1 2 3; do printf '[[backends]]\nid = "b%s"\naddress = "127.0.0.1:%s"\n' "$i" "${backend_ports[$i]}"; done
  } > "$work/$name.toml"
  $TASKSET -c "$proxy_cores" $PROXY --config "$work/$name.toml" 2>/dev/null & PID=$!
  pids+=("$PID")
}
start_proxy many "$threads"; sp_many_port=$PORT; sp_many_pid=$PID
start_proxy one 1; sp_one_port=$PORT; sp_one_pid=$PID
twem_port=$(free_port)
{ printf 'pool:\n  listen: 127.0.0.1:%s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n' "$twem_port"
  for i in 0 1 2 3; do printf '   - 127.0.0.1:%s:1\n' "${backend_ports[$i]}"; done
} > "$work/nutcracker.yml"
$TASKSET -c "$proxy_cores" $NUTCRACKER -c "$work/nutcracker.yml" >/dev/null 2>&1 & twem_pid=$!; pids+=($twem_pid)
for port in "$sp_many_port" "$sp_one_port" "$twem_port"; do wait_port "$port"; done

cpu_ticks() { awk '{ split($0, a, ") "); split(a[2], f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
# One redis-benchmark run: prints "rps p99_ms".
bench() { # port test pipeline requests clients threads
  $TASKSET -c "$load_cores" $REDIS_BENCHMARK -h 127.0.0.1 -p "$1" -t "$2" -P "$3" -n "$4" -c "$5" \
    --threads "$6" -d 400 -r 100000 --csv 2>/dev/null \
    | awk -F'","' -v t="${2^^}" 'index($0, "\"" t "\"") == 1 { gsub(/"/, "", $2); gsub(/"/, "", $7); print $2, $7 }'
}
results="$work/results"
: > "$results"
for round in $(seq "$ROUNDS"); do
  for workload in "set 1" "get 1" "set 16" "get 16"; do
    set -- $workload; test=$1; pipe=$2
    n=$N_P1; [ "$pipe" -gt 1 ] && n=$N_P16
    # The backends' own limit: one load per backend at once.
    per=$(( CLIENTS / 4 )); per_threads=$(( load_threads / 4 )); [ "$per_threads" -lt 1 ] && per_threads=1
    loads=()
    for port in "${backend_ports[@]}"; do
      bench "$port" "$test" "$pipe" $(( n / 4 )) "$per" "$per_threads" > "$work/limit.$port" & loads+=($!)
    done
    wait "${loads[@]}"
    rps=$(cat "$work"/limit.* | awk '{ s += $1; if ($2 > p) p = $2 } END { print s, p }')
    echo "limit $test P$pipe $rps 0" >> "$results"
    for target in "many $sp_many_port $sp_many_pid" "one $sp_one_port $sp_one_pid" "twemproxy $twem_port $twem_pid"; do
      set -- $target
      before=$(cpu_ticks "$3")
      out=$(bench "$2" "$test" "$pipe" "$n" "$CLIENTS" "$load_threads")
      after=$(cpu_ticks "$3")
      cpu=$(awk -v a="$before" -v b="$after" -v t="$tick" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / t / n * 1e6 }')
      echo "$1 $test P$pipe $out $cpu" >> "$results"
    done
    log "round $round ${test^^} P$pipe done"
  done
done
# Medians per target and workload.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "| $cores cores, $ROUNDS rounds, medians | P1 SET | P1 GET | P16 SET | P16 GET | p99 ms P1 GET / P16 GET | CPU s per million, P1 / P16 (GET) |"
echo "|---|---|---|---|---|---|---|"
for target in limit many one twemproxy; do
  case $target in
    limit) label="backends' limit";; many) label="session-proxy, $threads threads";;
    one) label="session-proxy, 1 thread";; twemproxy) label="twemproxy";;
  esac
  row="| $label"
  for w in "set P1" "get P1" "set P16" "get P16"; do
    set -- $w
    m=$(awk -v t="$target" -v c="$1" -v p="$2" '$1 == t && $2 == c && $3 == p { print $4 }' "$results" | median)
    lim=$(awk -v c="$1" -v p="$2" '$1 == "limit" && $2 == c && $3 == p { print $4 }' "$results" | median)
    if [ "$target" = limit ]; then row="$row | $(awk -v m="$m" 'BEGIN { printf "%.0fk", m / 1000 }')"
    else row="$row | $(awk -v m="$m" -v l="$lim" 'BEGIN { printf "%.0fk (%.2fx)", m / 1000, m / l }')"; fi
  done
  p99() { awk -v t="$target" -v p="$1" '$1 == t && $2 == "get" && $3 == p { print $5 }' "$results" | median; }
  cpu() { awk -v t="$target" -v p="$1" '$1 == t && $2 == "get" && $3 == p { print $6 }' "$results" | median; }
  if [ "$target" = limit ]; then row="$row | $(p99 P1) / $(p99 P16) | |"
  else row="$row | $(p99 P1) / $(p99 P16) | $(cpu P1) / $(cpu P16) |"; fi
  echo "$row"
done
