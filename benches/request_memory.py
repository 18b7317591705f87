#!/usr/bin/env python3
"""What one large request costs the proxy in memory, and that
`[limits] max_memory_bytes` bounds it.

Starts two redis-servers and the release proxy on free loopback ports,
then for each of MGET, DEL and EXISTS of KEYS keys (default 2,500,000, a
53 MB request) sends the request through the proxy with no memory limit
and reads the proxy's peak RSS (VmHWM) before and after: the growth per
key is what `src/memory.rs`'s ARG_COST must stay above. Then, with
`max_memory_bytes = LIMIT_MIB` (default 256), four clients send the MGET
at once: the peak RSS is printed beside the limit, and how many were
refused with -OOM.

    benches/request_memory.py            # needs target/release/session-proxy
    KEYS=1000000 LIMIT_MIB=128 benches/request_memory.py
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "session-proxy")
KEYS = int(os.environ.get("KEYS", "2500000"))
LIMIT_MIB = int(os.environ.get("LIMIT_MIB", "256"))


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


def encode(words):
    out = [b"*%d\r\n" % len(words)]
    for w in words:
        out.append(b"$%d\r\n%s\r\n" % (len(w), w))
    return b"".join(out)


def read_reply(sock):
    """Reads one whole reply (an array of bulks or nulls, an integer or an
    error), returning its first line."""
    f = sock.makefile("rb")
    first = f.readline()
    if first.startswith(b"*"):
        for _ in range(int(first[1:])):
            line = f.readline()
            if line.startswith(b"$") and int(line[1:]) >= 0:
                f.read(int(line[1:]) + 2)
    return first


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def start_proxy(dir, backends, limit):
    port = free_port()
    path = os.path.join(dir, f"proxy-{limit}.toml")
    with open(path, "w") as f:
        f.write(f'[listen]\naddress = "127.0.0.1:{port}"\n')
        f.write(f"[limits]\nmax_memory_bytes = {limit}\nmax_request_bytes = {128 << 20}\n")
        f.write("[pool]\nrequest_timeout_ms = 60000\n")
        for i, b in enumerate(backends):
            f.write(f'[[backends]]\nid = "b{i}"\naddress = "127.0.0.1:{b}"\n')
    proc = subprocess.Popen([BINARY, "--config", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def main():
    if not os.path.exists(BINARY):
        sys.exit("build it first: cargo build --release")
    dir = tempfile.mkdtemp()
    redis = []
    ports = []
    try:
        for _ in range(2):
            port = free_port()
            redis.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", dir], stdout=subprocess.DEVNULL))
            ports.append(port)
        for p in ports:
            wait_port(p)
        keys = [b"session:%08d" % i for i in range(KEYS)]
        print(f"one request of {KEYS} keys ({len(encode([b'MGET'] + keys)) / 1e6:.0f} MB), no limit:")
        for command in (b"MGET", b"DEL", b"EXISTS", b"TOUCH"):
            # A fresh proxy each: the peak is this request's alone.
            proxy, port = start_proxy(dir, ports, 0)
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(encode([b"PING"]))
            read_reply(sock)
            before = peak_rss_kib(proxy.pid)
            sock.sendall(encode([command] + keys))
            first = read_reply(sock)
            after = peak_rss_kib(proxy.pid)
            sock.close()
            grew = (after - before) * 1024
            print(f"  {command.decode():7} reply {first[:12]!r}: peak RSS {before // 1024} -> "
                  f"{after // 1024} MiB, {grew / KEYS:.0f} bytes per key")
            proxy.kill()
            proxy.wait()

        limit = LIMIT_MIB << 20
        proxy, port = start_proxy(dir, ports, limit)
        request = encode([b"MGET"] + keys)
        outcomes = []

        def one():
            sock = socket.create_connection(("127.0.0.1", port))
            try:
                sock.sendall(request)
                outcomes.append(read_reply(sock)[:4])
            except OSError as e:
                outcomes.append(f"closed ({e.__class__.__name__})".encode())
            finally:
                sock.close()

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = peak_rss_kib(proxy.pid) * 1024
        proxy.kill()
        proxy.wait()
        print(f"four at once under max_memory_bytes = {LIMIT_MIB} MiB: peak RSS "
              f"{peak >> 20} MiB ({peak / limit:.2f}x the limit); replies: "
              + ", ".join(o.decode(errors='replace') for o in outcomes))
    finally:
        for r in redis:
            r.kill()
            r.wait()
        shutil.rmtree(dir, ignore_errors=True)


if __name__ == "__main__":
    main()
