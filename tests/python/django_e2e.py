"""Django end-to-end check, run by tests/django.rs under each test venv.

A real Django 5.2 project (settings configured in-process, one view) uses an
unmodified session engine pointed at session-proxy: django-redis-sessions
0.6.2 (`--engine redis_sessions`) or Django's cache sessions on
`django.core.cache.backends.redis.RedisCache` (`--engine cache`). Through
Django's test client it creates, reads, modifies, cycles, expires and deletes
sessions, and checks with `session-proxy route` and direct connections to the
backends that every key lands on the backend the router names, in the chosen
database. Exits non-zero with a message on the first failure.
"""

import argparse
import json
import subprocess
import time

import django_site  # noqa: E402

parser = argparse.ArgumentParser()
django_site.add_arguments(parser)
parser.add_argument("--proxy-bin", required=True)
parser.add_argument("--config", required=True)
parser.add_argument("--backend", action="append", default=[], help="id=host:port")
args = parser.parse_args()

import redis  # noqa: E402

django_site.setup(args)

from django.test import Client  # noqa: E402

get = django_site.get

BACKENDS = {}
for spec in args.backend:
    backend_id, address = spec.split("=", 1)
    host, port = address.rsplit(":", 1)
    BACKENDS[backend_id] = redis.Redis(host=host, port=int(port), db=args.db)


def stored_key(session_key):
    return django_site.stored_key(args.engine, session_key)


def owner(key):
    out = subprocess.run(
        [args.proxy_bin, "route", "--config", args.config, key],
        check=True, capture_output=True, text=True,
    ).stdout
    routed_key, backend_id = out.rstrip("\n").split("\t")
    assert routed_key == key, out
    return backend_id


def where(key):
    return sorted(b for b, r in BACKENDS.items() if r.exists(key))


def check(condition, message):
    if not condition:
        django_site.fail(args.engine, message)


def expect_on_owner(session_key):
    key = stored_key(session_key)
    want = owner(key)
    check(where(key) == [want], f"{key} is on {where(key)}, router says {want}")
    return want


client = Client()
state = get(client, action="login", user="alice")
first_key = state["key"]
check(first_key, "login did not create a session")
expect_on_owner(first_key)

for expected in (1, 2):
    state = get(client, action="incr")
    check(state["count"] == expected and state["user"] == "alice", f"read/modify: {state}")
check(state["key"] == first_key, "the key changed without a cycle")

state = get(client, action="cycle")
second_key = state["key"]
check(second_key and second_key != first_key, "cycle_key kept the key")
check(state["user"] == "alice" and state["count"] == 2, f"cycle lost data: {state}")
check(where(stored_key(first_key)) == [], "the old key survived the cycle")
expect_on_owner(second_key)

# Many sessions spread over the backends, each where the router says.
used = set()
for i in range(40):
    other = Client()
    state = get(other, action="login", user=f"user{i}")
    used.add(expect_on_owner(state["key"]))
    check(get(other)["user"] == f"user{i}", "a session did not read back")
check(len(used) == len(BACKENDS), f"40 sessions used only backends {sorted(used)}")

# Expiry: a one-second session disappears from its backend, then reads as anonymous.
state = get(client, action="expire")
key = stored_key(state["key"])
backend = BACKENDS[owner(key)]
ttl = backend.ttl(key)
check(ttl in (0, 1), f"expiry not set on the backend: ttl {ttl}")
deadline = time.monotonic() + 20
while backend.exists(key):
    check(time.monotonic() < deadline, "the expired session never left its backend")
    time.sleep(0.05)
check(get(client)["user"] is None, "an expired session still logged in")

# Delete: logout flushes the session and its key.
state = get(client, action="login", user="bob")
key = stored_key(state["key"])
expect_on_owner(state["key"])
state = get(client, action="logout")
check(state["user"] is None, f"logout kept the user: {state}")
check(where(key) == [], "logout left the key on a backend")

# The protocol the engine's own connection negotiated (redis-py 8 sends HELLO 3).
if args.engine == "redis_sessions":
    from redis_sessions.session import RedisServer

    connection = RedisServer(None).get()
else:
    from django.core.cache import cache

    connection = cache._cache.get_client(write=False)
info = connection.execute_command("CLIENT", "INFO")
info = info.decode() if isinstance(info, bytes) else str(info)
resp = dict(f.split("=", 1) for f in info.split() if "=" in f).get("resp")
print(json.dumps({"engine": args.engine, "redis_py": redis.__version__, "resp": resp, "backends_used": sorted(used)}))
