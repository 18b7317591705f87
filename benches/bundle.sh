#!/usr/bin/env bash
# Makes target/manycore/: benches/manycore.sh with the release session-proxy,
# redis-server, redis-benchmark, nutcracker and taskset in bin/ and every
# shared library they load in lib/, so the benchmark runs on a machine where
# nothing is installed (the device machine: carry target/manycore).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin session-proxy
out=target/manycore
rm -rf "$out"; mkdir -p "$out/bin" "$out/lib"
for tool in target/release/session-proxy "$(command -v redis-server)" "$(command -v redis-benchmark)" \
            "$(command -v nutcracker)" "$(command -v taskset)"; do
  cp -L "$tool" "$out/bin/"
  ldd "$tool" | awk '/=> \// { print $3 } /ld-linux/ && !/=>/ { print $1 }' \
    | while read -r lib; do cp -Ln "$lib" "$out/lib/" 2>/dev/null || true; done
done
# Debug info stays here: the bundle must fit what a device run can carry.
strip --strip-debug "$out/bin/"* 2>/dev/null || true
cp benches/manycore.sh "$out/"
du -sh "$out" >&2
