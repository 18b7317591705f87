#!/usr/bin/env python3
"""The proxy over a Redis Cluster against redis-benchmark's own cluster mode
on the same nodes (issue 15; benches/README.md#redis-cluster).

Makes a cluster of three masters (`redis-cli --cluster create`), starts
session-proxy with the cluster as its one backend, then per round,
interleaved: redis-benchmark GET and SET (50 clients, 400-byte values,
100,000 random keys, pipeline 1 and 16) with `--cluster` straight at the
nodes, the same through the proxy, and (to show what the cluster layer
costs) the same through a second proxy over three plain Redis servers.
Prints medians of the rounds (requests/s, p50, p99) and the proxy's ratio
to the cluster-aware client, round by round. Run through
benches/cluster.sh.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from load import cpu_seconds, redis_benchmark
from ports import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "target/release/session-proxy")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
REQUESTS = int(os.environ.get("REQUESTS", "500000"))
MASTERS = 3


def cluster_port():
    """A free port that can be a cluster node's: at most 55535, with its
    cluster bus port (10,000 higher) free too."""
    import socket
    while True:
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


def cluster_ok(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "CLUSTER", "INFO"],
                         capture_output=True, text=True).stdout
    return "cluster_state:ok" in out


def main():
    work = tempfile.mkdtemp(prefix="session-proxy-cluster-bench-")
    procs = []
    try:
        ports = [cluster_port() for _ in range(MASTERS)]
        for port in ports:
            d = os.path.join(work, str(port))
            os.mkdir(d)
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", d, "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf"], stdout=subprocess.DEVNULL))
            wait_port(port)
        subprocess.run(["redis-cli", "--cluster", "create"]
                       + [f"127.0.0.1:{p}" for p in ports] + ["--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not all(cluster_ok(p) for p in ports):
            if time.time() > deadline:
                sys.exit("the cluster did not come up")
            time.sleep(0.1)
        proxy_port = free_port()
        config = os.path.join(work, "proxy.toml")
        seeds = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
        with open(config, "w") as f:
            f.write(f'[listen]\naddress = "127.0.0.1:{proxy_port}"\n'
                    f'[[backends]]\nid = "cluster"\ncluster = {{ seeds = [{seeds}] }}\n')
        proxy = subprocess.Popen([PROXY, "--config", config], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        procs.append(proxy)
        wait_port(proxy_port)
        # Three plain servers behind a second proxy.
        plain_ports = [free_port() for _ in range(MASTERS)]
        for port in plain_ports:
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", work, "--dbfilename", f"{port}.rdb"],
                stdout=subprocess.DEVNULL))
            wait_port(port)
        plain_proxy = free_port()
        plain_config = os.path.join(work, "plain.toml")
        with open(plain_config, "w") as f:
            f.write(f'[listen]\naddress = "127.0.0.1:{plain_proxy}"\n')
            for i, port in enumerate(plain_ports):
                f.write(f'[[backends]]\nid = "p{i}"\naddress = "127.0.0.1:{port}"\n')
        plain = subprocess.Popen([PROXY, "--config", plain_config], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        procs.append(plain)
        wait_port(plain_proxy)
        # The proxy has its slot map once a write goes through.
        deadline = time.time() + 30
        while subprocess.run(["redis-cli", "-p", str(proxy_port), "SET", "bench:probe", "1"],
                             capture_output=True, text=True).stdout.strip() != "OK":
            if time.time() > deadline:
                sys.exit("the proxy never got the slot map")
            time.sleep(0.1)
        workloads = [(t, p) for p in (1, 16) for t in ("set", "get")]
        targets = ("cluster", "proxy", "plain")
        results = {(w, target): [] for w in workloads for target in targets}
        for r in range(ROUNDS):
            for w in workloads:
                test, pipeline = w
                results[(w, "cluster")].append(
                    redis_benchmark(ports[0], test, pipeline, REQUESTS, ["--cluster"]))
                for target, port, pid in (("proxy", proxy_port, proxy.pid), ("plain", plain_proxy, plain.pid)):
                    before = cpu_seconds(pid)
                    run = redis_benchmark(port, test, pipeline, REQUESTS)
                    run["cpu"] = (cpu_seconds(pid) - before) / REQUESTS * 1e6
                    results[(w, target)].append(run)
                print(f"round {r + 1}: {test.upper()} P{pipeline} "
                      f"cluster {results[(w, 'cluster')][-1]['rps']:,.0f} "
                      f"proxy {results[(w, 'proxy')][-1]['rps']:,.0f} "
                      f"plain {results[(w, 'plain')][-1]['rps']:,.0f}", file=sys.stderr)
        print("| workload | target | req/s | p50 ms | p99 ms | CPU s / M req | proxy / cluster by round |")
        print("|---|---|---:|---:|---:|---:|---|")
        for w in workloads:
            test, pipeline = w
            ratios = [p["rps"] / c["rps"] for p, c in zip(results[(w, "proxy")], results[(w, "cluster")])]
            names = (("cluster", "redis-benchmark --cluster"), ("proxy", "session-proxy over the cluster"),
                     ("plain", "session-proxy over 3 plain servers"))
            for target, name in names:
                runs = results[(w, target)]
                med = lambda k: statistics.median(x[k] for x in runs)
                ratio = ", ".join(f"{x:.2f}" for x in ratios) if target == "proxy" else ""
                cpu = f"{med('cpu'):.2f}" if target != "cluster" else "-"
                print(f"| {test.upper()} P{pipeline} | {name} | {med('rps'):,.0f} | {med('p50_ms'):.3f} "
                      f"| {med('p99_ms'):.3f} | {cpu} | {ratio} |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
