#!/usr/bin/env python3
"""A/B throughput of two session-proxy binaries in front of the same two
Redis servers, interleaved (the order alternates each round): redis-benchmark
GET and SET, 50 clients, pipeline 1 and 16, 400-byte values, random keys, and
the Django-like mix of examples/loadgen.rs. Prints per workload the medians
of req/s, their ratio (B / A) and the ratio round by round, the noise (how
far either binary's rounds stray from its own median) and whether B / A is
worse or better than 1 beyond it, and each
proxy's CPU microseconds per request (from /proc, which holds steadier than
throughput on a shared VM) with its ratio. Run through benches/ab.sh, which
builds both binaries.

usage: ab.py BINARY_A BINARY_B   (ROUNDS=n, default 5; THREADS=n sets both
proxies' [runtime] threads, default the machine's choice)
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from load import cpu_seconds
from ports import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "target/release/examples/loadgen")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
THREADS = os.environ.get("THREADS")
WORKLOADS = [("get", 1), ("set", 1), ("get", 16), ("set", 16), ("mix", 0)]


def measure(port, test, pipeline):
    """Requests per second, and how many requests were made."""
    if test == "mix":
        out = subprocess.run([LOADGEN, "--port", str(port), "--connections", "50", "--requests", "200000"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["rps"], 200_000
    requests = 200_000 if pipeline == 1 else 1_000_000
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-c", "50",
                          "-n", str(requests), "-P", str(pipeline), "-d", "400", "-r", "100000", "--csv"],
                         capture_output=True, text=True, check=True).stdout
    row = [l for l in out.splitlines() if l.startswith('"' + test.upper())][0]
    return float(row.split(",")[1].strip('"')), requests


def noise(a, b):
    """How far one binary's rounds stray from its own median (the larger of
    A's and B's, as a fraction): what the same binary gives twice on this
    machine, against which B / A is read."""
    return max(max(abs(x / statistics.median(xs) - 1) for x in xs) for xs in (a, b))


def verdict(ratio, spread, ratios):
    """"worse" when B / A falls below 1 by more than the noise; "B behind in
    every round" is said too, as a sign the noise may hide a real loss."""
    if ratio < 1 - spread:
        return "worse"
    if ratio > 1 + spread:
        return "better"
    if all(r < 1 for r in ratios):
        return "within noise (B behind in every round)"
    return "within noise"


def main():
    binaries = {"A": sys.argv[1], "B": sys.argv[2]}
    work = tempfile.mkdtemp(prefix="session-proxy-ab-")
    redis = [free_port(), free_port()]
    procs = [subprocess.Popen(["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL)
             for p in redis]
    try:
        for p in redis:
            wait_port(p)
        ports, pids = {}, {}
        for name, binary in binaries.items():
            ports[name] = free_port()
            path = os.path.join(work, f"{name}.toml")
            with open(path, "w") as f:
                f.write(f'[listen]\naddress = "127.0.0.1:{ports[name]}"\n'
                        f'[[backends]]\nid = "a"\naddress = "127.0.0.1:{redis[0]}"\n'
                        f'[[backends]]\nid = "b"\naddress = "127.0.0.1:{redis[1]}"\n')
                if THREADS:
                    f.write(f'[runtime]\nthreads = {THREADS}\n')
            procs.append(subprocess.Popen([binary, "--config", path], stderr=subprocess.DEVNULL))
            pids[name] = procs[-1].pid
            wait_port(ports[name])
        results, cpu = {}, {}
        for rnd in range(ROUNDS):
            for test, pipeline in WORKLOADS:
                for name in ("A", "B") if rnd % 2 == 0 else ("B", "A"):
                    before = cpu_seconds(pids[name])
                    rps, requests = measure(ports[name], test, pipeline)
                    cpu_us = (cpu_seconds(pids[name]) - before) / requests * 1e6
                    results.setdefault((test, pipeline, name), []).append(rps)
                    cpu.setdefault((test, pipeline, name), []).append(cpu_us)
                    print(f"round {rnd + 1}/{ROUNDS} {test} P{pipeline} {name}: {rps:,.0f} req/s, "
                          f"{cpu_us:.2f} µs CPU/request", file=sys.stderr)
        print("| workload | A req/s | B req/s | B / A | B / A by round | noise | verdict "
              "| A CPU µs/req | B CPU µs/req | B / A |")
        print("|---|---:|---:|---:|---|---:|---|---:|---:|---:|")
        for test, pipeline in WORKLOADS:
            a, b = results[(test, pipeline, "A")], results[(test, pipeline, "B")]
            ca, cb = (statistics.median(cpu[(test, pipeline, n)]) for n in ("A", "B"))
            label = "Django mix" if test == "mix" else f"{test.upper()} P{pipeline}"
            ratios = [y / x for x, y in zip(a, b)]
            by_round = ", ".join(f"{r:.2f}" for r in ratios)
            ratio = statistics.median(b) / statistics.median(a)
            spread = noise(a, b)
            print(f"| {label} | {statistics.median(a):,.0f} | {statistics.median(b):,.0f} "
                  f"| {ratio:.3f} | {by_round} | ±{spread:.3f} | {verdict(ratio, spread, ratios)} "
                  f"| {ca:.2f} | {cb:.2f} | {cb / ca:.3f} |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
