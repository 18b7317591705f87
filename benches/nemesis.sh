#!/usr/bin/env bash
# The nemesis (tests/it/nemesis.rs): simulated users through two proxies over
# two Sentinel groups, a Redis Cluster, a plain backend and a managed one (a
# host name that failovers move) while faults overlap; the checker's
# verdict and the history go to target/nemesis/.
#
#   benches/nemesis.sh                 # 45 s of faults
#   NEMESIS_SECONDS=1800 benches/nemesis.sh
#   NEMESIS_SEED=<seed> benches/nemesis.sh   # the same random choices again
#   NEMESIS_NO_RELOAD=1 benches/nemesis.sh   # without the reloads
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${NEMESIS_SECONDS:-45}
echo "== nemesis: ${seconds} s of faults (bounded: the test stops its load ${seconds} s + 6 s after the start)"
rm -rf target/nemesis/logs
NEMESIS_SECONDS=$seconds SESSION_PROXY_TEST_LOGS="$(pwd)/target/nemesis/logs" \
  cargo test --test it -- --ignored nemesis::nemesis --nocapture || true
echo "== verdict: target/nemesis/verdict.md, history: target/nemesis/history.txt, logs of the proxies, servers and sentinels: target/nemesis/logs/"
cat target/nemesis/verdict.md
