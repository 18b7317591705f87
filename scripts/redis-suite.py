#!/usr/bin/env python3
"""Redis's own test suite (the tcl units of Redis 7.0.15) against a Redis
directly and through session-proxy, and the comparison.

Every test that passes directly must pass through the proxy, over one
backend and over three with `hash_tag = "{}"`, unless docs/redis-suite.md lists it
under "Redis's own test suite" with the reason. Prints per-unit counts
(docs/redis-suite.md's table comes from them) and exits 1 on a failure not listed.

    scripts/redis-suite.py                  # every unit, every mode
    scripts/redis-suite.py --units unit/type/incr --modes direct,one
    scripts/redis-suite.py --quick          # the CI subset
    scripts/redis-suite.py --parallel 1     # the modes one after another

The suite comes from Debian's source package (`apt-get source redis`, with
a deb-src line for bookworm): REDIS_SRC names its directory, else
target/redis-src is used and filled when empty. The proxy is
target/debug/session-proxy (`cargo build`), or SESSION_PROXY.
"""

import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEB_SRC = "/etc/apt/sources.list.d/session-proxy-deb-src.sources"

UNITS = [
    "unit/type/string",
    "unit/type/incr",
    "unit/expire",
    "unit/keyspace",
    "unit/type/hash",
    "unit/type/list",
    "unit/type/set",
    "unit/type/zset",
    "unit/scan",
    "unit/multi",
    "unit/pubsub",
    "unit/scripting",
    "unit/info-command",
    "unit/protocol",
    "unit/tracking",
]
# The CI subset: quick units that cover the reply shapes and the keyspace.
QUICK = [
    "unit/type/string",
    "unit/type/incr",
    "unit/type/hash",
    "unit/keyspace",
    "unit/info-command",
    "unit/protocol",
]
# What a proxy in front of servers it does not own cannot offer: DEBUG,
# replication, SAVE, maxmemory, server-wide resets; the same for the direct
# run, so both run the same tests.
TAGS = (
    "-needs:debug -needs:repl -needs:save -needs:config-maxmemory -needs:pfdebug "
    "-needs:latency -needs:local-process -needs:reset -needs:config-resetstat"
)
# Tests that cannot pass through a proxy and, failing, would stop the
# rest of their unit (an exception, or a connection stuck behind a
# script that never ends): skipped through the proxy, counted as failed,
# and listed in docs/redis-suite.md with the reason.
SKIP_THROUGH_PROXY = [
    "Script ACL check",
    "Timedout read-only scripts can be killed by SCRIPT KILL",
    "Timedout read-only scripts can be killed by SCRIPT KILL even when use pcall",
    "Timedout script does not cause a false dead client",
    "Timedout scripts and unblocked command",
    "Timedout scripts that modified data can't be killed by SCRIPT KILL",
    "SHUTDOWN NOSAVE can kill a timedout script anyway",
    "MULTI and script timeout",
    "EXEC and script timeout",
    "MULTI-EXEC body and script timeout",
    "just EXEC and script timeout",
    "MULTI with config error",
    # unit/tracking: the proxy cannot see whether a script read its keys,
    # so it remembers them all (its client is told of more changes, never
    # fewer), which puts invalidations the test does not read ahead of the
    # replies of the tests after it.
    "Tracking only occurs for scripts when a command calls a read-only command",
    # CONFIG SET tracking-table-max-keys: the proxy's limit is its config
    # file's `[limits] tracking_table_keys` (the test would wait for ever).
    "Tracking gets notification on tracking table key eviction",
    "Server is able to evacuate enough keys when num of keys surpasses limit by more than defined initial effort",
    # maxmemory from the proxy's INFO used_memory: the proxy's own memory,
    # not the backend's.
    "Tracking invalidation message of eviction keys should be before response",
    # FLUSHDB inside MULTI is refused: it runs on every backend, a
    # transaction on one (the error would stop the unit).
    "flushdb tracking invalidation message is not interleaved with transaction response",
]
# Over three backends, also skipped: a test whose CROSSSLOT error (keys on
# two backends, as Redis Cluster answers) would stop the rest of its unit,
# or leave a client behind that changes what later tests see.
SKIP_OVER_THREE = [
    "EXEC fail on WATCHed key modified by SORT with STORE even if the result is empty",
    # Its error leaves its other client blocked in `BZMPOP 0 ... myzset`
    # for good, which pops the member `a` that "ZRANDMEMBER - listpack"
    # adds later (that test then draws only b and c).
    "BZMPOP should not blocks on non key arguments - #10762",
]
RESULT = re.compile(r"^\[(?:\x1b\[[0-9;]*m)?(ok|err|exception|skip|ignore)(?:\x1b\[[0-9;]*m)?\]: (.*?)(?: \(\d+ ms\))?$")
UNIT_START = re.compile(r"Testing (unit/\S+)")
# CONFIG SET parameters the units' set-up changes: applied to every backend.
CONFIG_SET = [
    "list-max-listpack-size",
    "list-max-ziplist-size",
    "list-compress-depth",
    "set-max-intset-entries",
    "set-max-listpack-entries",
    "set-max-listpack-value",
    "hash-max-listpack-entries",
    "hash-max-listpack-value",
    "hash-max-ziplist-entries",
    "hash-max-ziplist-value",
    "zset-max-listpack-entries",
    "zset-max-listpack-value",
    "zset-max-ziplist-entries",
    "zset-max-ziplist-value",
    "stream-node-max-entries",
    "stream-node-max-bytes",
    "proto-max-bulk-len",
    "lua-time-limit",
    "busy-reply-threshold",
    "notify-keyspace-events",
    "lazyfree-lazy-user-del",
    "lazyfree-lazy-user-flush",
    "active-expire-enabled",
    "hz",
    "min-replicas-to-write",
    "maxmemory",
    "maxmemory-policy",
    "sanitize-dump-payload",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=20.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on {port}")


def redis_source():
    src = os.environ.get("REDIS_SRC")
    if src:
        return src
    base = os.path.join(ROOT, "target", "redis-src")
    found = glob.glob(os.path.join(base, "redis-*", "tests", "test_helper.tcl"))
    if found:
        return os.path.dirname(os.path.dirname(found[0]))
    os.makedirs(base, exist_ok=True)
    print("== redis-suite: fetching Redis's source package (apt-get source redis)", flush=True)
    done = subprocess.run(["apt-get", "source", "-qq", "redis"], cwd=base)
    if done.returncode != 0 and os.geteuid() == 0 and not os.path.exists(DEB_SRC):
        # Debian's images list binary packages only: add the sources of
        # the same suites, once, and try again.
        print(f"== redis-suite: adding {DEB_SRC} (deb-src for bookworm) and apt-get update", flush=True)
        with open(DEB_SRC, "w") as f:
            f.write("Types: deb-src\nURIs: http://deb.debian.org/debian\n"
                    "Suites: bookworm bookworm-updates\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                    "Types: deb-src\nURIs: http://deb.debian.org/debian-security\n"
                    "Suites: bookworm-security\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        done = subprocess.run(["apt-get", "source", "-qq", "redis"], cwd=base)
    found = glob.glob(os.path.join(base, "redis-*", "tests", "test_helper.tcl"))
    if done.returncode != 0 or not found:
        sys.exit(
            "no Redis source: add a deb-src line for bookworm and run apt-get update "
            "(.ci/run does), or set REDIS_SRC"
        )
    return os.path.dirname(os.path.dirname(found[0]))


class Servers:
    """redis-servers and a proxy on free loopback ports in a temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="redis-suite-")
        self.procs = []

    def redis(self):
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_port(port)
        return port

    def proxy(self, backends, hash_tag):
        binary = os.environ.get("SESSION_PROXY", os.path.join(ROOT, "target", "debug", "session-proxy"))
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: cargo build")
        port = free_port()
        path = os.path.join(self.dir, f"proxy-{port}.toml")
        with open(path, "w") as f:
            f.write(f'[listen]\naddress = "127.0.0.1:{port}"\n')
            f.write("[keys]\nallow_flush = true\nallow_keyspace_config = true\n")
            f.write("config_set = [" + ", ".join(f'"{c}"' for c in CONFIG_SET) + "]\n")
            if hash_tag:
                f.write('hash_tag = "{}"\n')
            f.write("[pool]\nrequest_timeout_ms = 30000\n")
            f.write("[limits]\nmax_pipeline = 100000\n")
            for i, b in enumerate(backends):
                f.write(f'[[backends]]\nid = "b{i}"\naddress = "127.0.0.1:{b}"\n')
        proc = subprocess.Popen([binary, "--config", path], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.dir, f"proxy-{port}.log"), "w"))
        self.procs.append(proc)
        wait_port(port)
        return port

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# Each mode's runs have a suite of their own (its tests/tmp, which the
# suite empties at each start) and ports of their own (the suite's test
# server listens just below its base port).
MODE_PORTS = {"direct": 21111, "one": 23111, "three": 25111}


def say(line):
    """One line of progress, whole (the modes print from threads of their own)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def suite_copy(src, mode):
    """A directory where `mode`'s runs start: links to the source's entries,
    with a copy of its tests/."""
    copy = os.path.join(os.path.dirname(src), "run-" + mode)
    shutil.rmtree(copy, ignore_errors=True)
    os.makedirs(copy)
    for entry in os.listdir(src):
        if entry == "tests":
            shutil.copytree(os.path.join(src, entry), os.path.join(copy, entry), symlinks=True)
        else:
            os.symlink(os.path.join(src, entry), os.path.join(copy, entry))
    return copy


def run_unit(src, port, unit, timeout, mode):
    """Runs one unit against 127.0.0.1:port: ({test: status}, timed out)."""
    proxied = mode != "direct"
    base = MODE_PORTS[mode.removesuffix("-again")]
    cmd = ["./runtest", "--host", "127.0.0.1", "--port", str(port), "--singledb",
           "--ignore-encoding", "--ignore-digest", "--clients", "1", "--tags", TAGS,
           "--timeout", str(timeout), "--baseport", str(base), "--portcount", "1000",
           "--single", unit]
    if proxied:
        for test in SKIP_THROUGH_PROXY:
            cmd += ["--skiptest", test]
    if mode.startswith("three"):
        for test in SKIP_OVER_THREE:
            cmd += ["--skiptest", test]
    try:
        out = subprocess.run(cmd, cwd=src, capture_output=True, text=True, errors="replace",
                             stdin=subprocess.DEVNULL, timeout=timeout + 60).stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += "\n[timeout]"
    logs = os.path.join(ROOT, "target", "redis-suite-logs")
    os.makedirs(logs, exist_ok=True)
    name = f"{mode}-" + unit.replace("/", "-") + ".log"
    with open(os.path.join(logs, name), "w") as f:
        f.write(out)
    tests = {}
    for line in out.splitlines():
        m = RESULT.match(line.strip())
        if m and m.group(1) in ("ok", "err", "exception"):
            tests.setdefault(m.group(2), m.group(1))
    # The suite's own timeout (no progress for --timeout seconds) prints
    # TIMEOUT; ours adds "[timeout]".
    return tests, out.endswith("[timeout]") or "TIMEOUT" in out


def run_mode(src, mode, units, timeout):
    """Every unit against fresh servers of `mode` (a unit may leave a server
    changed: a raised proto-max-bulk-len makes another unit wait forever)."""
    results = {}
    for unit in units:
        # A unit that waits out its timeout (a timing test stalled on a
        # busy 2-core machine) runs once more, on fresh servers, and says so.
        for attempt in (1, 2):
            servers = Servers()
            try:
                if mode == "direct":
                    port = servers.redis()
                elif mode == "one":
                    port = servers.proxy([servers.redis()], hash_tag=False)
                else:
                    port = servers.proxy([servers.redis() for _ in range(3)], hash_tag=True)
                started = time.time()
                results[unit], timed_out = run_unit(src, port, unit, timeout, mode)
                ok = sum(1 for s in results[unit].values() if s == "ok")
                note = " (timed out)" if timed_out else ""
                say(f"   {mode} {unit}: {ok} passed ({time.time() - started:.0f} s){note}")
            finally:
                servers.close()
            if not timed_out:
                break
    return results


def known_failures():
    """docs/redis-suite.md's list: (mode, unit, test) rows between the markers."""
    with open(os.path.join(ROOT, "docs", "redis-suite.md")) as f:
        text = f.read()
    start = text.find("<!-- redis-suite failures -->")
    end = text.find("<!-- end of redis-suite failures -->")
    known = set()
    if start < 0 or end < 0:
        return known
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in ("one", "three", "both"):
            test = cells[2].strip("`")
            for mode in (["one", "three"] if cells[0] == "both" else [cells[0]]):
                known.add((mode, cells[1].strip("`"), test))
    return known


def second_chance(src, unexpected, timeout):
    """Runs once more, on fresh servers, each unit with a failure not
    listed (a timing test on a busy 2-core machine): what fails again."""
    again = []
    for mode, unit in sorted({(m, u) for m, u, _ in unexpected}):
        servers = Servers()
        try:
            if mode == "one":
                port = servers.proxy([servers.redis()], hash_tag=False)
            else:
                port = servers.proxy([servers.redis() for _ in range(3)], hash_tag=True)
            tests, _ = run_unit(src, port, unit, timeout, mode + "-again")
        finally:
            servers.close()
        for m, u, test in unexpected:
            if (m, u) != (mode, unit):
                continue
            if tests.get(test) == "ok":
                print(f"   {mode} {unit}: `{test}` failed once, passed on a second run", flush=True)
            else:
                again.append((m, u, test))
    return again


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", default=None, help="comma-separated, default: all")
    parser.add_argument("--quick", action="store_true", help="the CI subset of units")
    parser.add_argument("--modes", default="direct,one,three")
    parser.add_argument("--timeout", type=int, default=60,
                        help="seconds a unit may go without progress")
    parser.add_argument("--list-failures", action="store_true")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1,
                        help="modes run at once (default: one per core)")
    args = parser.parse_args()
    units = args.units.split(",") if args.units else (QUICK if args.quick else UNITS)
    modes = args.modes.split(",")
    src = redis_source()
    # The modes run side by side, each on servers of its own: the suite's
    # client waits for each reply, so one mode keeps about one core busy.
    wanted = [m for m in ["direct", "one", "three"] if m == "direct" or m in modes]
    parallel = max(1, min(args.parallel, len(wanted)))

    def run(mode):
        started = time.time()
        say(f"== redis-suite: {mode}: {len(units)} units")
        found = run_mode(suite_copy(src, mode), mode, units, args.timeout)
        say(f"== redis-suite: {mode} done in {time.time() - started:.0f} s")
        return found

    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        results = dict(zip(wanted, pool.map(run, wanted)))
    known = known_failures()
    unexpected = []
    print("| unit | pass directly | " + " | ".join(
        f"through the proxy, {m} backend{'s' if m == 'three' else ''}" for m in ("one", "three") if m in results) + " |")
    print("|---|---|" + "---|" * len([m for m in ("one", "three") if m in results]))
    totals = {m: [0, 0] for m in results}
    for unit in units:
        direct = {t for t, s in results["direct"].get(unit, {}).items() if s == "ok"}
        totals["direct"][0] += len(direct)
        row = [unit, str(len(direct))]
        for mode in ("one", "three"):
            if mode not in results:
                continue
            passed = {t for t, s in results[mode].get(unit, {}).items() if s == "ok"} & direct
            totals[mode][0] += len(passed)
            totals[mode][1] += len(direct)
            row.append(f"{len(passed)} ({100 * len(passed) / max(len(direct), 1):.0f}%)")
            for test in sorted(direct - passed):
                if (mode, unit, test) not in known:
                    unexpected.append((mode, unit, test))
                if args.list_failures:
                    print(f"  {mode} {unit}: {test}", file=sys.stderr)
        print("| " + " | ".join(row) + " |")
    row = ["all", str(totals["direct"][0])]
    for mode in ("one", "three"):
        if mode in totals:
            p, d = totals[mode]
            row.append(f"{p} ({100 * p / max(d, 1):.1f}%)")
    print("| " + " | ".join(row) + " |")
    if unexpected:
        unexpected = second_chance(src, unexpected, args.timeout)
    if unexpected:
        print(f"\n{len(unexpected)} tests pass directly and fail through the proxy, not listed in docs/redis-suite.md:")
        for mode, unit, test in unexpected:
            print(f"| {mode} | `{unit}` | `{test}` | ? |")
        return 1
    print("\nredis-suite: every test that passes directly passes through the proxy or is listed in docs/redis-suite.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
