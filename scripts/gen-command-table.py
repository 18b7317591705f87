#!/usr/bin/env python3
"""Writes src/protocol/keyed.rs: the keyed commands of Redis 7 with their key
specs, from COMMAND INFO of a live redis-server.

    redis-server --port 7399 --save '' &
    scripts/gen-command-table.py 7399 > src/protocol/keyed.rs

tests/it/command_table.rs checks the pinned table against the Redis of the tests,
so a Redis that moves a key, or adds a keyed command, fails a test rather than
a session. Commands the proxy runs itself (src/protocol/command.rs's hand
table), server-wide commands and those whose keys cannot all be known from
their arguments are left out; EXCLUDED says why for each.
"""
import socket
import sys

# Data-type groups (ACL categories) whose keyed commands are forwarded.
GROUPS = {"string", "hash", "set", "sortedset", "list", "bitmap",
          "hyperloglog", "stream", "geo", "keyspace"}

# Keyed commands left out, and why (docs/commands.md lists them).
EXCLUDED = {
    "sort": "BY and GET patterns read keys the arguments do not name",
    "sort_ro": "BY and GET patterns read keys the arguments do not name",
    "migrate": "moves keys to a server the proxy does not know",
}

# Containers whose subcommands take keys: only these subcommands are kept.
CONTAINERS = {"xinfo": None, "xgroup": None, "memory": {"usage"}, "object": None}

# The proxy's own entries (hand table): generated entries with these names
# are skipped.
HAND = {
    "get", "set", "setex", "psetex", "setnx", "getex", "getdel", "del",
    "unlink", "exists", "touch", "expire", "pexpire", "expireat",
    "pexpireat", "ttl", "pttl", "persist", "type", "strlen", "incr", "incrby",
    "decr", "decrby", "mget", "mset", "eval", "evalsha", "eval_ro",
    "evalsha_ro", "fcall", "fcall_ro", "keys", "scan", "randomkey", "watch",
}

# Named entries of Cmd for commands the proxy treats specially.
SPECIAL = {"rename": "Rename", "renamenx": "RenameNx"}


def read(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read(f) for _ in range(n)]
    raise ValueError(line)


def command(sock, f, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return read(f)


def pairs(flat):
    return dict(zip(flat[::2], flat[1::2]))


def key_spec(raw):
    spec = pairs(raw)
    flags = set(spec.get("flags", []))
    bs = pairs(spec["begin_search"]) if isinstance(spec["begin_search"], list) else spec["begin_search"]
    fk = pairs(spec["find_keys"]) if isinstance(spec["find_keys"], list) else spec["find_keys"]
    bs_spec = pairs(bs["spec"]) if isinstance(bs.get("spec"), list) else bs.get("spec")
    fk_spec = pairs(fk["spec"]) if isinstance(fk.get("spec"), list) else fk.get("spec")
    if bs["type"] == "index":
        begin = ("Index", bs_spec["index"])
    elif bs["type"] == "keyword":
        begin = ("Keyword", bs_spec["keyword"], bs_spec["startfrom"])
    else:
        return None, flags
    if fk["type"] == "range":
        find = ("Range", fk_spec["lastkey"], fk_spec["keystep"], fk_spec["limit"])
    elif fk["type"] == "keynum":
        find = ("KeyNum", fk_spec["keynumidx"], fk_spec["firstkey"], fk_spec["keystep"])
    else:
        return None, flags
    return (begin, find), flags


def rust_spec(s):
    (begin, find) = s
    if begin[0] == "Index":
        b = f"Begin::Index({begin[1]})"
    else:
        b = f'Begin::Keyword("{begin[1]}", {begin[2]})'
    if find[0] == "Range":
        f = f"Find::Range {{ last: {find[1]}, step: {find[2]}, limit: {find[3]} }}"
    else:
        f = f"Find::KeyNum {{ at: {find[1]}, first: {find[2]}, step: {find[3]} }}"
    return f"KeySpec {{ begin: {b}, find: {f} }}"


def entry(info, sub_of=None):
    name, arity, flags, first, last, step, acl = info[:7]
    specs = info[8] if len(info) > 8 else []
    parsed = []
    for raw in specs:
        s, sflags = key_spec(raw)
        if s is None or "incomplete" in sflags or "not_key" in sflags:
            return None
        parsed.append(s)
    return {
        "name": name,
        "arity": arity,
        "write": "write" in flags,
        "blocking": "blocking" in flags,
        "legacy": (first, last, step),
        "specs": parsed,
        "acl": set(c.lstrip("@") for c in acl),
        "subs": info[9] if len(info) > 9 else [],
    }


def main():
    port = int(sys.argv[1])
    sock = socket.create_connection(("127.0.0.1", port))
    f = sock.makefile("rb")
    infos = command(sock, f, "COMMAND", "INFO")
    kept = []
    for info in sorted(infos, key=lambda i: i[0]):
        name = info[0]
        e = entry(info)
        if e is None or name in HAND or name in EXCLUDED:
            continue
        if not (e["acl"] & GROUPS) or "dangerous" in e["acl"] and name not in ("rename", "renamenx", "restore"):
            if name not in CONTAINERS:
                continue
        subs = []
        if name in CONTAINERS:
            wanted = CONTAINERS[name]
            for sub in sorted(e["subs"], key=lambda s: s[0]):
                se = entry(sub)
                short = sub[0].split("|", 1)[1]
                if se is None or (wanted is not None and short not in wanted):
                    continue
                if not se["specs"] and short != "help":
                    continue
                subs.append(se)
            if not subs:
                continue
        elif not e["specs"]:
            continue
        e["subs"] = subs
        kept.append(e)
    print("// @generated by scripts/gen-command-table.py from COMMAND INFO of")
    version = [l for l in command(sock, f, "INFO", "server").splitlines() if l.startswith("redis_version:")][0]
    print(f"// Redis {version.split(':')[1]}; checked by tests/it/command_table.rs. Do not edit.")
    print("//! Redis's keyed commands, with their key specs.")
    print()
    print("use super::spec::{Begin, Cmd, Find, KeySpec, Route, Spec, Sub};")
    print()
    print("/// Redis's keyed commands that the proxy forwards by key, from COMMAND INFO.")
    print("pub static KEYED: &[Spec] = &[")
    for e in kept:
        cmd = SPECIAL.get(e["name"], "Keyed")
        specs = ", ".join(rust_spec(s) for s in e["specs"])
        simple = (len(e["specs"]) == 1 and e["specs"][0] == (("Index", 1), ("Range", 0, 1, 0))
                  and not e["subs"])
        route = "Route::Key" if simple else "Route::Specs"
        subs = ""
        if e["subs"]:
            parts = []
            for s in e["subs"]:
                sspecs = ", ".join(rust_spec(x) for x in s["specs"])
                parts.append(
                    f'Sub {{ name: "{s["name"]}", arity: {s["arity"]}, write: {str(s["write"]).lower()}, specs: &[{sspecs}] }}')
            subs = ", ".join(parts)
        print(f'    Spec {{ cmd: Cmd::{cmd}, name: "{e["name"]}", arity: {e["arity"]}, route: {route}, '
              f'write: {str(e["write"]).lower()}, no_auth: false, blocking: {str(e["blocking"]).lower()}, '
              f'keys: {tuple(e["legacy"])}, specs: &[{specs}], subs: &[{subs}] }},')
    print("];")
    print()
    print("/// The data type of each command of [`KEYED`], for docs/commands.md's list.")
    print("pub static GROUPS: &[(&str, &str)] = &[")
    order = ["string", "hash", "set", "sortedset", "list", "bitmap", "hyperloglog",
             "stream", "geo", "keyspace"]
    for e in kept:
        acl = set(e["acl"]).union(*(s["acl"] for s in e["subs"]))
        group = next((g for g in order if g in acl), "keyspace")
        print(f'    ("{e["name"]}", "{group}"),')
    print("];")


if __name__ == "__main__":
    main()
