#!/usr/bin/env python3
"""CPU per transaction under WATCH of two session-proxy binaries: clients
saving a session under an optimistic lock, as redis-py's `transaction()`
does (WATCH, GET, then MULTI, SET, EXEC in one write), transaction after
transaction. One redis-server (TLS=1: over TLS, the proxy's backend
connections too, clients plain); each binary in front of it in turn (A, B,
A, B, ...), after a run on Redis directly ("direct"). Per run: the proxy's
and Redis's CPU microseconds per transaction (from /proc), the connections
Redis accepted per 1,000 transactions, and transactions per second.

    python3 benches/watch.py target/ab/release/session-proxy target/release/session-proxy [PAIRS]
    (C= clients, 20; N= transactions per run, 20000)
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import cpu_seconds  # noqa: E402
from ports import free_port, wait_port  # noqa: E402

CLIENTS = int(os.environ.get("C", "20"))
TRANSACTIONS = int(os.environ.get("N", "20000"))
TLS = os.environ.get("TLS") == "1"


def command(*args):
    out = b"*%d\r\n" % len(args)
    for arg in args:
        arg = arg.encode() if isinstance(arg, str) else arg
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


async def reply(reader):
    """One RESP2 reply (values here hold no CR or LF)."""
    line = await reader.readline()
    if line[:1] == b"$" and not line.startswith(b"$-1"):
        await reader.readline()
    elif line[:1] == b"*" and not line.startswith(b"*-1"):
        for _ in range(int(line[1:])):
            await reply(reader)
    elif line[:1] == b"-":
        raise RuntimeError(line.decode())
    return line


async def client(port, number, count):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = f"session:{number}"
    for i in range(count):
        writer.write(command("WATCH", key))
        await reply(reader)
        writer.write(command("GET", key))
        await reply(reader)
        writer.write(command("MULTI") + command("SET", key, f"v{i}") + command("EXEC"))
        for _ in range(3):
            await reply(reader)
    writer.close()


async def load(port, total):
    each = total // CLIENTS
    await asyncio.gather(*(client(port, n, each) for n in range(CLIENTS)))
    return each * CLIENTS


def accepted(cli):
    info = subprocess.run([*cli, "info", "stats"], capture_output=True, text=True).stdout
    for line in info.splitlines():
        if line.startswith("total_connections_received:"):
            return int(line.split(":")[1])
    return 0


def run(side, port, pid, redis_pid, cli):
    asyncio.run(load(port, 1000))
    p0, r0, c0 = cpu_seconds(pid), cpu_seconds(redis_pid), accepted(cli)
    start = time.monotonic()
    n = asyncio.run(load(port, TRANSACTIONS))
    elapsed = time.monotonic() - start
    p1, r1, c1 = cpu_seconds(pid), cpu_seconds(redis_pid), accepted(cli)
    proxy = 0 if pid == redis_pid else (p1 - p0) * 1e6 / n
    print(f"{side}: proxy {proxy:.1f} us/transaction, redis {(r1 - r0) * 1e6 / n:.1f} us/transaction, "
          f"{(c1 - c0 - 1) * 1000 / n:.1f} connections per 1000, {n / elapsed:.0f} transactions/s",
          flush=True)


def main():
    a, b = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    work = tempfile.mkdtemp(prefix="session-proxy-watch-bench-")
    port = free_port()
    cli = ["redis-cli", "-p", str(port)]
    backend = f'address = "127.0.0.1:{port}"'
    if TLS:
        subprocess.run(["benches/certs.sh", work], check=True)
        ca = os.path.join(work, "ca.crt")
        server = ["--port", "0", "--tls-port", str(port),
                  "--tls-cert-file", os.path.join(work, "server.crt"),
                  "--tls-key-file", os.path.join(work, "server.key"),
                  "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        cli += ["--tls", "--cacert", ca]
        backend += f'\ntls = {{ ca = "{ca}" }}'
    else:
        server = ["--port", str(port)]
    redis = subprocess.Popen(["redis-server", *server, "--save", "", "--appendonly", "no",
                              "--dir", work], stdout=subprocess.DEVNULL)
    procs = [redis]
    try:
        wait_port(port)
        direct = port
        if TLS:
            # Direct clients are plain: Redis gets a plain port beside TLS.
            direct = free_port()
            subprocess.run([*cli, "config", "set", "port", str(direct)], check=True,
                           stdout=subprocess.DEVNULL)
            wait_port(direct)
        for _ in range(pairs):
            run("direct", direct, redis.pid, redis.pid, cli)
            for side, binary in (("A", a), ("B", b)):
                listen = free_port()
                config = os.path.join(work, "proxy.toml")
                with open(config, "w") as f:
                    f.write(f'[listen]\naddress = "127.0.0.1:{listen}"\n'
                            f'[[backends]]\nid = "a"\n{backend}\n')
                proxy = subprocess.Popen([binary, "--config", config],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(proxy)
                wait_port(listen)
                run(side, listen, proxy.pid, redis.pid, cli)
                proxy.terminate()
                proxy.wait()
                procs.remove(proxy)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
