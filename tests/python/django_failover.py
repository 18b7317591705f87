"""Django sessions across a Sentinel failover, run by tests/django.rs.

`--phase create` logs in users through a real Django view (the session engine
pointed at session-proxy, never at the sentinels) and saves their cookies to
`--state`; the Rust test then fails the masters over; `--phase verify`
replays the cookies and checks that every session is still there and can
still be modified.
"""

import argparse
import json

import django_site

parser = argparse.ArgumentParser()
django_site.add_arguments(parser)
parser.add_argument("--phase", choices=["create", "verify"], required=True)
parser.add_argument("--state", required=True)
parser.add_argument("--users", type=int, default=40)
args = parser.parse_args()

django_site.setup(args)

from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402

if args.phase == "create":
    sessions = {}
    for i in range(args.users):
        client = Client()
        state = django_site.get(client, action="login", user=f"user{i}")
        state = django_site.get(client, action="incr")
        if state["key"] is None or state["count"] != 1:
            django_site.fail(args.engine, f"login failed: {state}")
        sessions[f"user{i}"] = state["key"]
    with open(args.state, "w") as f:
        json.dump(sessions, f)
    print(json.dumps({"created": len(sessions)}))
else:
    with open(args.state) as f:
        sessions = json.load(f)
    for user, key in sessions.items():
        client = Client()
        client.cookies[settings.SESSION_COOKIE_NAME] = key
        state = django_site.get(client)
        if state["user"] != user or state["count"] != 1:
            django_site.fail(args.engine, f"{user}'s session after the failover: {state}")
        state = django_site.get(client, action="incr")
        if state["count"] != 2:
            django_site.fail(args.engine, f"{user}'s session cannot be modified: {state}")
    print(json.dumps({"verified": len(sessions)}))
