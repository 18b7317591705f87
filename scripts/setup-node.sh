#!/usr/bin/env bash
# Installs the Node session stores the tests drive (tests/node/package.json:
# connect-redis, express-session, node-redis, ioredis) into target/node.
# Idempotent: reused while package.json is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/node
if [ -d "$dir/node_modules" ] && cmp -s tests/node/package.json "$dir/package.json"; then
  echo "Node packages ready: $dir"
  exit 0
fi
echo "setting up $dir from tests/node/package.json (npm install, a minute)"
rm -rf "$dir"
mkdir -p "$dir"
cp tests/node/package.json "$dir/package.json"
# --legacy-peer-deps: connect-redis 9 names node-redis >= 5 as its peer, and
# node-redis 4 sits beside it (as redis) for connect-redis 7; each test hands
# its store the client it wants.
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error --legacy-peer-deps)
echo "Node packages ready: $dir"
