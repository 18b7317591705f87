#!/usr/bin/env python3
"""The cost of a migration (benches/README.md#migration): one client, one
request at a time, GET of 400-byte sessions that live on an old Redis named
in `[migration] from`, through session-proxy over three new Redis servers.

Per round, interleaved: the first GET of each key (miss on the owner, moved
from the old server: three extra round trips), a second GET of each while the
migration is still on (one extra round trip, to find the old server empty),
and the same GETs through a proxy with no migration; then the background
mover's throughput with no rate limit (keys moved per second until it
reports done). Prints medians of the rounds, in microseconds per GET as the
Python client sees them. Run through benches/migration.sh.
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from ports import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "target/release/session-proxy")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
KEYS = int(os.environ.get("KEYS", "5000"))
MOVER_KEYS = int(os.environ.get("MOVER_KEYS", "50000"))
VALUE = b"x" * 400


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if line[:1] == b"-":
            sys.exit(f"error reply: {line!r}")
        return line

    def call(self, *args):
        self.send(*args)
        return self.reply()


def redis(tmp, name):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", tmp, "--dbfilename", f"{name}.rdb"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def proxy(tmp, name, backends, old=None, keys_per_second=1):
    port = free_port()
    text = f'[listen]\naddress = "127.0.0.1:{port}"\n'
    for i, b in enumerate(backends):
        text += f'[[backends]]\nid = "{"abc"[i]}"\naddress = "127.0.0.1:{b}"\n'
    if old:
        text += (f"[migration]\nkeys_per_second = {keys_per_second}\n"
                 f'from = [ {{ id = "old", address = "127.0.0.1:{old}" }} ]\n')
    path = os.path.join(tmp, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    proc = subprocess.Popen([PROXY, "--config", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def fill(port, keys):
    c = Client(port)
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        for k in batch:
            c.send(b"SET", k, VALUE)
        for _ in batch:
            c.reply()


def gets(port, keys):
    """Median and p99 of one GET, in microseconds; every key must be found."""
    c = Client(port)
    took = []
    for k in keys:
        t = time.perf_counter()
        if c.call(b"GET", k) != VALUE:
            sys.exit(f"{k!r} not found through port {port}")
        took.append(time.perf_counter() - t)
    took.sort()
    return statistics.median(took) * 1e6, took[int(len(took) * 0.99)] * 1e6


def stop(*procs):
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def one_round(n):
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        old, old_port = redis(tmp, "old")
        new = [redis(tmp, f"new{i}") for i in range(3)]
        new_ports = [p for _, p in new]
        keys = [b"session:%d:%d" % (n, i) for i in range(KEYS)]
        fill(old_port, keys)
        moving, moving_port = proxy(tmp, "moving", new_ports, old=old_port)
        plain, plain_port = proxy(tmp, "plain", new_ports)
        rows["first GET: moved from the old server"] = gets(moving_port, keys)
        rows["GET during the migration, key already moved"] = gets(moving_port, keys)
        rows["GET with no migration"] = gets(plain_port, keys)
        stop(moving, plain)

        # The mover alone, unlimited, on MOVER_KEYS keys.
        c = Client(old_port)
        c.call(b"FLUSHALL")
        for _, p in new:
            Client(p).call(b"FLUSHALL")
        fill(old_port, [b"session:m:%d" % i for i in range(MOVER_KEYS)])
        started = time.perf_counter()
        mover, mover_port = proxy(tmp, "mover", new_ports, old=old_port,
                                  keys_per_second=10_000_000)
        info = Client(mover_port)
        while b"migration_state:done" not in info.call(b"INFO", b"migration"):
            time.sleep(0.01)
        took = time.perf_counter() - started
        if Client(old_port).call(b"DBSIZE") != b":0":
            sys.exit("the old server is not empty after the mover")
        stop(mover, old, *[p for p, _ in new])
    return rows, MOVER_KEYS / took


def main():
    results = {}
    mover = []
    for n in range(ROUNDS):
        rows, rate = one_round(n)
        for name, value in rows.items():
            results.setdefault(name, []).append(value)
        mover.append(rate)
        print(f"round {n + 1}/{ROUNDS}: " + ", ".join(
            f"{name}: {v[0]:.0f} us" for name, v in rows.items()
        ) + f"; mover {rate:,.0f} keys/s", file=sys.stderr)
    print(f"\n{KEYS} keys, {ROUNDS} rounds, medians (min-max of the round medians)\n")
    print("| GET through session-proxy | median us | p99 us |")
    print("|---|---|---|")
    for name, values in results.items():
        medians = [v[0] for v in values]
        p99s = [v[1] for v in values]
        print(f"| {name} | {statistics.median(medians):.0f} "
              f"({min(medians):.0f}-{max(medians):.0f}) | {statistics.median(p99s):.0f} |")
    print(f"\nBackground mover, no rate limit, {MOVER_KEYS} keys: "
          f"{statistics.median(mover):,.0f} keys/s ({min(mover):,.0f}-{max(mover):,.0f})")


if __name__ == "__main__":
    main()
