#!/usr/bin/env bash
# A/B throughput against an earlier revision: builds REV's release binary in a
# temporary worktree (into target/ab/), then this checkout's, and runs
# benches/ab.py with REV as A and the checkout as B. ROUNDS=n (default 5).
#   benches/ab.sh 7b7b55f
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benches/ab.sh REV}
root=$PWD
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/tree" 2>/dev/null || true; rm -rf "$work"' EXIT
echo "== ab.sh: building $rev into target/ab" >&2
git worktree add -q "$work/tree" "$rev"
(cd "$work/tree" && CARGO_TARGET_DIR="$root/target/ab" cargo build --release --bin session-proxy >&2)
echo "== ab.sh: building this checkout" >&2
cargo build --release --bin session-proxy --example loadgen >&2
echo "== ab.sh: running (each measurement prints a line on stderr)" >&2
python3 benches/ab.py target/ab/release/session-proxy target/release/session-proxy
