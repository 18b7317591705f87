"""redis-py 8.1's client-side cache (protocol=3, cache_config) on a session:
the second read of a key is served from the client's memory (the backends'
INFO commandstats count one GET, one HGETALL), and a write by each writer
(--writers: ports of a proxy or a Redis that write the same key) is seen by
the next read within a bounded time. Prints what it saw as JSON;
tests/it/tracking.rs runs it through the proxy and directly on Redis.

redis-py turns its cache on only for a server that says it is Redis 7.4 or
later, a policy of the client (what the cache uses, CLIENT TRACKING and
RESP3 pushes, is Redis 6's); the test servers are Debian's Redis 7.0, so
the floor is lowered here, for the proxy and for Redis alike."""

import argparse
import json
import time

import redis
from redis.cache import CacheConfig
from redis.connection import CacheProxyConnection

CacheProxyConnection.MIN_ALLOWED_VERSION = "7.0.0"

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--backends", required=True, help="ports whose commandstats count the reads")
parser.add_argument("--writers", required=True, help="ports that write the keys")
parser.add_argument("--key", default="session:py:1")
args = parser.parse_args()
backends = [redis.Redis(port=int(p)) for p in args.backends.split(",")]
writers = [redis.Redis(port=int(p)) for p in args.writers.split(",")]


def calls(command):
    total = 0
    for b in backends:
        stats = b.info("commandstats").get(f"cmdstat_{command}")
        total += stats["calls"] if stats else 0
    return total


def eventually(read, want, limit=5.0):
    """Reads until `want` is seen, at most `limit` seconds: True once seen."""
    until = time.monotonic() + limit
    while time.monotonic() < until:
        if read() == want:
            return True
        time.sleep(0.01)
    return read() == want


r = redis.Redis(port=args.port, protocol=3, cache_config=CacheConfig())
key, hkey = args.key, args.key + ":hash"
writers[0].set(key, "v0")
writers[0].delete(hkey)
writers[0].hset(hkey, mapping={"user": "alice", "seen": "1"})
seen = {}

before = calls("get")
first, second = r.get(key), r.get(key)
seen["reads"] = [first.decode(), second.decode()]
seen["get_calls_for_two_reads"] = calls("get") - before
for i, writer in enumerate(writers):
    value = f"v{i + 1}"
    writer.set(key, value)
    seen[f"writer_{i}_seen"] = eventually(lambda: r.get(key), value.encode())
    before = calls("get")
    r.get(key)
    r.get(key)
    seen[f"writer_{i}_then_cached"] = calls("get") - before

before = calls("hgetall")
h1, h2 = r.hgetall(hkey), r.hgetall(hkey)
seen["hash_reads_equal"] = h1 == h2
seen["hgetall_calls_for_two_reads"] = calls("hgetall") - before
writers[-1].hset(hkey, "seen", "2")
seen["hash_change_seen"] = eventually(lambda: r.hgetall(hkey).get(b"seen"), b"2")
print(json.dumps(seen, sort_keys=True))
