#!/usr/bin/env python3
"""The fairness benchmark (issue #11, situation 1): a normal client's small
session GETs beside heavy clients that pipeline 256 GETs of a 100 KB value
each, through session-proxy and directly on Redis, interleaved in one run.

One redis-server, session-proxy in front of it; examples/fairness.rs drives
each target in turn (8 heavy clients reading their replies, then 8 that
never read), ROUNDS times. Prints the normal client's p50, p99 and max (the
median over rounds), its requests that took longer than 100 ms (the socket
timeout django-redis-sessions uses: each is a logout), and the heavy
clients' throughput. Run through benches/fairness.sh.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from ports import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "target/release/session-proxy")
FAIRNESS = os.path.join(ROOT, "target/release/examples/fairness")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "8"))


def run(port, read):
    out = subprocess.run(
        [FAIRNESS, "--port", str(port), "--heavy", "8", "--pipeline", "256",
         "--value-bytes", "102400", "--seconds", str(SECONDS), "--read", "1" if read else "0"],
        capture_output=True, text=True, check=True, timeout=SECONDS + 120).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    work = tempfile.mkdtemp(prefix="session-proxy-fairness-")
    procs = []
    try:
        redis_port, proxy_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL))
        with open(os.path.join(work, "proxy.toml"), "w") as f:
            f.write(f"""[listen]
address = "127.0.0.1:{proxy_port}"
[[backends]]
id = "a"
address = "127.0.0.1:{redis_port}"
""")
        wait_port(redis_port)
        procs.append(subprocess.Popen([PROXY, "--config", os.path.join(work, "proxy.toml")],
                                      stderr=subprocess.DEVNULL))
        wait_port(proxy_port)
        targets = [("direct", redis_port), ("proxy", proxy_port)]
        results = {}
        for rnd in range(ROUNDS):
            for read in (True, False):
                for name, port in targets:
                    r = run(port, read)
                    results.setdefault((read, name), []).append(r)
                    print(f"round {rnd + 1}/{ROUNDS} {'reading' if read else 'never reading'} "
                          f"{name}: {json.dumps(r)}", file=sys.stderr)
        print(f"\n{ROUNDS} rounds of {SECONDS} s each, medians over rounds (timeouts: summed)\n")
        print("| heavy clients | target | normal GETs | p50 ms | p99 ms | max ms | over 100 ms | heavy MB/s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for read in (True, False):
            for name, _ in targets:
                rs = results[(read, name)]
                med = lambda k: statistics.median(r[k] for r in rs)
                print(f"| {'8 x 256 GETs of 100 KB, reading' if read else '8 x 256 GETs of 100 KB, never reading'}"
                      f" | {name} | {med('requests'):,.0f} | {med('p50_ms'):.3f} | {med('p99_ms'):.3f}"
                      f" | {med('max_ms'):.1f} | {sum(r['timeouts'] for r in rs)}"
                      f" | {med('heavy_mb_s'):,.0f} |")
        print("\nspread of p99 ms over rounds:")
        for (read, name), rs in results.items():
            print(f"  {'reading' if read else 'never reading'} {name}: "
                  + ", ".join(f"{r['p99_ms']:.2f}" for r in rs))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
