"""Python session stores beyond django-redis-sessions, run by
tests/python_stores.rs through the proxy and directly on Redis; each prints
what it saw as JSON, and the test compares the two.

`--store django-redis`: django-redis 5.4 as Django's cache (set_many,
get_many, keys, iter_keys, delete_pattern, clear, which is FLUSHDB) and
Django's cache and cached_db session engines on it. `--store flask`:
Flask-Session 0.8's Redis interface in a one-view Flask app (login,
modify, logout). `--store aiohttp`: aiohttp-session 2.12's RedisStorage
(redis.asyncio) in an aiohttp 3.11 app, the same steps.
"""

import argparse
import json
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--store", choices=["django-redis", "flask", "aiohttp"], required=True)
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
seen = {}


def django_redis():
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="stores-not-secret",
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{args.port}/0",
                "KEY_PREFIX": "session",
            }
        },
        USE_TZ=True,
    )
    django.setup()
    from django.core.cache import cache
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    cache.set_many({f"k{i}": i for i in range(30)}, timeout=300)
    seen["get_many"] = sorted(cache.get_many([f"k{i}" for i in range(0, 30, 3)]).items())
    seen["keys"] = sorted(cache.keys("k1*"))
    seen["iter_keys"] = sorted(cache.iter_keys("k2*"))
    seen["delete_pattern"] = cache.delete_pattern("k1*")
    seen["after_delete_pattern"] = sorted(cache.keys("*"))
    seen["incr"] = cache.incr("k0", 5)
    seen["ttl"] = 0 < cache.ttl("k0") <= 300
    for engine in ["django.contrib.sessions.backends.cache", "django.contrib.sessions.backends.cached_db"]:
        from importlib import import_module

        store_class = import_module(engine).SessionStore
        session = store_class()
        session["user"] = "alice"
        session.save()
        key = session.session_key
        loaded = store_class(session_key=key)
        seen[f"{engine}:load"] = loaded.get("user")
        loaded["count"] = 1
        loaded.save()
        seen[f"{engine}:modified"] = store_class(session_key=key).get("count")
        loaded.delete()
        seen[f"{engine}:deleted"] = store_class(session_key=key).get("user")
    cache.clear()
    seen["after_clear"] = sorted(cache.keys("*"))


def flask():
    import redis
    from flask import Flask, session
    from flask_session import Session

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="stores-not-secret",
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(host="127.0.0.1", port=args.port),
        SESSION_KEY_PREFIX="session:",
    )
    Session(app)

    @app.route("/<action>")
    def view(action):
        if action == "login":
            session["user"] = "alice"
            session["count"] = 0
        elif action == "incr":
            session["count"] = session.get("count", 0) + 1
        elif action == "logout":
            session.clear()
        return {"user": session.get("user"), "count": session.get("count")}

    client = app.test_client()
    seen["login"] = client.get("/login").json
    seen["incr"] = client.get("/incr").json
    seen["again"] = client.get("/incr").json
    seen["logout"] = client.get("/logout").json
    seen["after"] = client.get("/show").json


def aiohttp_store():
    import asyncio

    import redis.asyncio
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from aiohttp_session import get_session, setup
    from aiohttp_session.redis_storage import RedisStorage

    async def run():
        pool = redis.asyncio.Redis(host="127.0.0.1", port=args.port)
        app = web.Application()
        setup(app, RedisStorage(pool, cookie_name="session_aio", key_factory=lambda: "aio1"))

        async def view(request):
            session = await get_session(request)
            action = request.match_info["action"]
            if action == "login":
                session["user"] = "alice"
                session["count"] = 0
            elif action == "incr":
                session["count"] = session.get("count", 0) + 1
            elif action == "logout":
                session.invalidate()
            return web.json_response({"user": session.get("user"), "count": session.get("count")})

        app.router.add_get("/{action}", view)
        async with TestClient(TestServer(app)) as client:
            for step in ["login", "incr", "incr", "show"]:
                seen[step if step not in seen else step + "2"] = await (await client.get("/" + step)).json()
            seen["stored"] = sorted(k.decode() for k in await pool.keys("session_aio_*"))
            seen["logout"] = await (await client.get("/logout")).json()
            seen["after"] = await (await client.get("/show")).json()
            seen["left"] = sorted(k.decode() for k in await pool.keys("session_aio_*"))
        await pool.aclose()

    asyncio.run(run())


try:
    {"django-redis": django_redis, "flask": flask, "aiohttp": aiohttp_store}[args.store]()
except Exception as error:  # noqa: BLE001 - the message is the test's output
    print(f"FAIL ({args.store}): {error!r}", file=sys.stderr)
    raise
print(json.dumps(seen, sort_keys=True))
