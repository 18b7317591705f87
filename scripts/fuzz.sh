#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) from the seed
# corpus in fuzz/seeds/, on the nightly toolchain with AddressSanitizer.
# New inputs go to a scratch corpus under target/, never into the repo; a
# crash is saved under fuzz/artifacts/ and fails the run.
#   scripts/fuzz.sh [SECONDS]
# Needs: rustup's nightly toolchain and cargo-fuzz (.ci/run installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

command -v cargo-fuzz >/dev/null || { echo "missing cargo-fuzz: cargo install cargo-fuzz --locked" >&2; exit 1; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "missing the nightly toolchain: rustup toolchain install nightly" >&2; exit 1; }

targets=(request_framer backend_reply sentinel_reply key_lookup cluster_reply)
rm -rf fuzz/artifacts
echo "== fuzz: building ${#targets[@]} targets (nightly, AddressSanitizer)"
(cd fuzz && cargo +nightly fuzz build)
for target in "${targets[@]}"; do
  scratch="target/fuzz-corpus/$target"
  mkdir -p "$scratch"
  echo "== fuzz: $target for ${seconds}s"
  (cd fuzz && cargo +nightly fuzz run "$target" "../$scratch" "seeds/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 2>&1) \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|.*(panicked|ERROR|crash))" || true
  # cargo fuzz exits non-zero on a finding; the pipe hides it, so look.
  if [ -n "$(find "fuzz/artifacts/$target" -type f 2>/dev/null)" ]; then
    echo "fuzz: $target found a failing input, see fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} passed, 0 failed"
