"""Django sessions across a change under them, run by tests/django.rs and
tests/migration.rs.

`--phase create` logs in users through a real Django view and saves their
cookies to `--state`; the Rust test then changes something under them (a
Sentinel failover, a move onto the proxy, a reload); `--phase verify` replays
the cookies and checks that every session is still there and can still be
modified; `--phase logout` logs the first `--users` of them out and notes
it in the state, and later verifies check that those stay logged out.
"""

import argparse
import json

import django_site

parser = argparse.ArgumentParser()
django_site.add_arguments(parser)
parser.add_argument("--phase", choices=["create", "verify", "logout"], required=True)
parser.add_argument("--state", required=True)
parser.add_argument("--users", type=int, default=40)
args = parser.parse_args()

django_site.setup(args)

from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402


def client_of(key):
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    return client


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
        json.dump({"sessions": sessions, "logged_out": []}, f)
    print(json.dumps({"created": len(sessions)}))
elif args.phase == "logout":
    with open(args.state) as f:
        state_file = json.load(f)
    users = [u for u in state_file["sessions"] if u not in state_file["logged_out"]]
    for user in users[: args.users]:
        state = django_site.get(client_of(state_file["sessions"][user]), action="logout")
        if state["user"] is not None:
            django_site.fail(args.engine, f"{user} is still logged in: {state}")
        state_file["logged_out"].append(user)
    with open(args.state, "w") as f:
        json.dump(state_file, f)
    print(json.dumps({"logged_out": len(state_file["logged_out"])}))
else:
    with open(args.state) as f:
        state_file = json.load(f)
    verified = 0
    for user, key in state_file["sessions"].items():
        state = django_site.get(client_of(key))
        if user in state_file["logged_out"]:
            if state["user"] is not None:
                django_site.fail(args.engine, f"{user}'s logged-out session came back: {state}")
            continue
        if state["user"] != user or not state["count"]:
            django_site.fail(args.engine, f"{user}'s session is lost: {state}")
        count = state["count"]
        state = django_site.get(client_of(key), action="incr")
        if state["count"] != count + 1:
            django_site.fail(args.engine, f"{user}'s session cannot be modified: {state}")
        verified += 1
    print(json.dumps({"verified": verified}))
