#!/usr/bin/env python3
"""The client-side caching benchmark (issue 32): a Django session read
through redis-py 8.1 with its client-side cache (protocol=3, cache_config)
against the same without the cache, through the proxy and on a Redis
directly, side by side in interleaved rounds.

Two redis-servers behind the release proxy, and one Redis alone. Each run
is one Django worker in a process of its own (django-redis-sessions'
SessionStore, its connection object a redis.Redis with or without the
cache): SESSIONS sessions made first, then PAGE_VIEWS page views, each
loading a random session, one in WRITE_EVERY also saving it (so the cache is
invalidated as a site's would be). Prints per target: page views per
second, median and p99 of a page view's session load in microseconds, and
backend commands per page view (the servers' INFO commandstats, INFO and
the connection's set-up left out). ROUNDS=n (default 5).

Run with the venv that has redis-py 8.1 and Django:
    target/venv-redis8/bin/python benches/client_cache.py
redis-py enables its cache only for servers that say Redis 7.4 or later;
Debian's is 7.0, so the floor is lowered (what the cache uses, CLIENT
TRACKING and RESP3 pushes, is Redis 6's), for the proxy and Redis alike.
"""

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ports import free_port, wait_port  # noqa: E402

PROXY = os.environ.get("SESSION_PROXY", os.path.join(ROOT, "target", "release", "session-proxy"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
SESSIONS = int(os.environ.get("SESSIONS", "1000"))
PAGE_VIEWS = int(os.environ.get("PAGE_VIEWS", "20000"))
WRITE_EVERY = int(os.environ.get("WRITE_EVERY", "20"))


def worker(port, cached, seed):
    """One Django worker's page views on `port`: prints its figures as JSON."""
    import django
    from django.conf import settings
    import redis
    from redis.cache import CacheConfig
    from redis.connection import CacheProxyConnection

    CacheProxyConnection.MIN_ALLOWED_VERSION = "7.0.0"
    options = {"protocol": 3, "cache_config": CacheConfig()} if cached else {}
    connection = redis.Redis(host="127.0.0.1", port=port, **options)
    settings.configure(
        SECRET_KEY="bench",
        SESSION_ENGINE="redis_sessions.session",
        SESSION_REDIS_CONNECTION_OBJECT=connection,
        SESSION_SERIALIZER="django.contrib.sessions.serializers.JSONSerializer",
        INSTALLED_APPS=["django.contrib.sessions"],
    )
    django.setup()
    from redis_sessions.session import SessionStore

    rng = random.Random(seed)
    keys = []
    for i in range(SESSIONS):
        s = SessionStore()
        s["user_id"] = i
        s["cart"] = list(range(20))
        s.create()
        keys.append(s.session_key)
    print("ready", flush=True)
    sys.stdin.readline()
    loads = []
    started = time.perf_counter()
    for view in range(PAGE_VIEWS):
        key = keys[rng.randrange(SESSIONS)]
        t = time.perf_counter()
        s = SessionStore(session_key=key)
        s.load()
        loads.append(time.perf_counter() - t)
        if view % WRITE_EVERY == 0:
            s["seen"] = view
            s.save()
    took = time.perf_counter() - started
    loads.sort()
    print(json.dumps({
        "views_per_s": PAGE_VIEWS / took,
        "p50_us": loads[len(loads) // 2] * 1e6,
        "p99_us": loads[int(len(loads) * 0.99)] * 1e6,
    }), flush=True)


def commands(ports):
    """Commands the servers on `ports` have run, INFO left out."""
    total = 0
    for port in ports:
        out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def measure(port, cached, servers, seed):
    """A worker's run; the backend commands counted over its page views only."""
    proc = subprocess.Popen([sys.executable, __file__, "--worker", str(port), str(int(cached)), str(seed)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    before = commands(servers)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    figures = json.loads(proc.stdout.readline())
    figures["commands_per_view"] = (commands(servers) - before) / PAGE_VIEWS
    proc.wait()
    return figures


def main():
    work = tempfile.mkdtemp(prefix="session-proxy-cache-bench-")
    procs = []

    def redis():
        port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL))
        wait_port(port)
        return port

    try:
        backends = [redis(), redis()]
        direct = redis()
        proxy_port = free_port()
        config = os.path.join(work, "proxy.toml")
        with open(config, "w") as f:
            f.write(f'[listen]\naddress = "127.0.0.1:{proxy_port}"\n')
            for i, port in enumerate(backends):
                f.write(f'[[backends]]\nid = "b{i}"\naddress = "127.0.0.1:{port}"\n')
        procs.append(subprocess.Popen([PROXY, "--config", config], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(proxy_port)
        targets = [
            ("proxy, no client cache", proxy_port, False, backends),
            ("proxy, client cache", proxy_port, True, backends),
            ("direct Redis, no client cache", direct, False, [direct]),
            ("direct Redis, client cache", direct, True, [direct]),
        ]
        results = {name: [] for name, *_ in targets}
        for r in range(ROUNDS):
            for name, port, cached, servers in targets:
                figures = measure(port, cached, servers, seed=r)
                results[name].append(figures)
                print(f"round {r + 1} {name}: {figures['views_per_s']:.0f} views/s, "
                      f"p50 {figures['p50_us']:.0f} us, {figures['commands_per_view']:.3f} commands/view",
                      file=sys.stderr, flush=True)
        print(f"\n{PAGE_VIEWS} page views over {SESSIONS} sessions, one save in {WRITE_EVERY}, "
              f"{ROUNDS} interleaved rounds: medians (min-max)\n")
        print("| target | page views/s | session load p50 µs | p99 µs | backend commands per page view |")
        print("|---|---:|---:|---:|---:|")
        for name, *_ in targets:
            rows = results[name]

            def col(k, fmt):
                vals = [x[k] for x in rows]
                return f"{fmt.format(statistics.median(vals))} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"
            print(f"| {name} | {col('views_per_s', '{:,.0f}')} | {col('p50_us', '{:.0f}')} | "
                  f"{col('p99_us', '{:.0f}')} | {col('commands_per_view', '{:.3f}')} |")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]))
    else:
        main()
