"""A one-view Django project configured in-process, shared by the end-to-end
scripts. `setup(args)` points the chosen session engine at session-proxy;
`get(client, **params)` makes one request and returns the view's JSON plus
the session key the client now holds."""

import sys

import django
from django.conf import settings

PREFIX = "session"


def add_arguments(parser):
    parser.add_argument("--engine", choices=["redis_sessions", "cache"], required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix-socket")
    parser.add_argument("--db", type=int, default=0)
    parser.add_argument("--password")
    parser.add_argument("--prefix", default=PREFIX)


def setup(args):
    if args.engine == "redis_sessions":
        session_redis = {"prefix": args.prefix, "db": args.db, "password": args.password}
        if args.unix_socket:
            session_redis["unix_domain_socket_path"] = args.unix_socket
        else:
            session_redis.update({"host": "127.0.0.1", "port": args.port})
        engine_settings = {
            "SESSION_ENGINE": "redis_sessions.session",
            "SESSION_REDIS": session_redis,
        }
    else:
        auth = f":{args.password}@" if args.password else ""
        if args.unix_socket:
            location = f"unix://{auth}{args.unix_socket}?db={args.db}"
        else:
            location = f"redis://{auth}127.0.0.1:{args.port}/{args.db}"
        engine_settings = {
            "SESSION_ENGINE": "django.contrib.sessions.backends.cache",
            "CACHES": {
                "default": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": location,
                    "KEY_PREFIX": args.prefix,
                }
            },
        }
    settings.configure(
        DEBUG=False,
        SECRET_KEY="e2e-not-secret",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        DATABASES={},
        USE_TZ=True,
        **engine_settings,
    )
    django.setup()


def view(request):
    from django.http import JsonResponse

    action = request.GET.get("action", "show")
    session = request.session
    if action == "login":
        session["user"] = request.GET["user"]
        session["count"] = 0
    elif action == "incr":
        session["count"] = session.get("count", 0) + 1
    elif action == "cycle":
        session.cycle_key()
    elif action == "expire":
        session.set_expiry(1)
        session["expiring"] = True
    elif action == "logout":
        session.flush()
    return JsonResponse({"user": session.get("user"), "count": session.get("count")})


def _urls():
    from django.urls import path

    return [path("", view)]


def __getattr__(name):
    # ROOT_URLCONF is this module; Django reads `urlpatterns` after setup.
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)


def stored_key(engine, session_key):
    """The Redis key an engine stores a session under."""
    if engine == "redis_sessions":
        return f"{PREFIX}:{session_key}"
    return f"{PREFIX}:1:django.contrib.sessions.cache{session_key}"


def fail(engine, message):
    print(f"FAIL ({engine}): {message}", file=sys.stderr)
    sys.exit(1)


def get(client, **params):
    """One request; the result carries the session key the client now holds
    (the middleware saves the session after the view, so the view cannot tell)."""
    response = client.get("/", params)
    if response.status_code != 200:
        fail(settings.SESSION_ENGINE, f"status {response.status_code}")
    state = response.json()
    cookie = client.cookies.get(settings.SESSION_COOKIE_NAME)
    state["key"] = cookie.value if cookie is not None and cookie.value else None
    return state
