#!/usr/bin/env python3
"""The load benchmark: session-proxy against one Redis directly and against
twemproxy (nutcracker), interleaved in one run, on this machine.

Starts two redis-servers, session-proxy and twemproxy in front of the same
two, drives them with redis-benchmark (GET and SET, 50 clients, pipeline 1
and 16, 400-byte values, random keys) and with a Django-like session mix
(examples/loadgen.rs: SETEX 2 KiB, GET, EXISTS, DEL), then a connection-scale
check (10,000 idle clients plus steady traffic). Prints a table with the
medians of the rounds and the ratios. Run through benches/load.sh.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from ports import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "target/release/session-proxy")
LOADGEN = os.path.join(ROOT, "target/release/examples/loadgen")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
# Where the medians of a run go as JSON (charts.py reads them).
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench")
# PIN=1: the load generators on the first core, Redis and both proxies on the
# others, instead of wherever the scheduler puts them (see benches/README.md).
PIN = os.environ.get("PIN") == "1" and (os.cpu_count() or 1) > 1
CLIENT_CORES = {0}
SERVER_CORES = set(range(1, os.cpu_count() or 1))
TICK = os.sysconf("SC_CLK_TCK")


def more_files():
    """Raises the child's open-file limit as far as the hard limit allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def client_side():
    more_files()
    if PIN:
        os.sched_setaffinity(0, CLIENT_CORES)


def server_side():
    more_files()
    if PIN:
        os.sched_setaffinity(0, SERVER_CORES)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def redis_benchmark(port, test, pipeline, requests, extra=()):
    """One redis-benchmark run (50 clients, 400-byte values, 100,000 random
    keys); `extra` arguments go on its command line (`--cluster`)."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-c", "50",
         "-n", str(requests), "-P", str(pipeline), "-d", "400", "-r", "100000", "--csv",
         *extra],
        capture_output=True, text=True, check=True, preexec_fn=client_side).stdout
    row = [l for l in out.splitlines() if l.startswith('"' + test.upper())][0]
    values = [v.strip('"') for v in row.split(",")]
    return {"requests": requests, "rps": float(values[1]), "p50_ms": float(values[4]), "p99_ms": float(values[6])}


def django_mix(port, requests, idle=0):
    out = subprocess.run(
        [LOADGEN, "--port", str(port), "--connections", "50", "--requests", str(requests), "--idle", str(idle)],
        capture_output=True, text=True, check=True, preexec_fn=client_side).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    work = tempfile.mkdtemp(prefix="session-proxy-bench-")
    procs = []
    try:
        ports = {name: free_port() for name in ("a", "b", "proxy", "twemproxy")}
        for name in ("a", "b"):
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(ports[name]), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL,
                preexec_fn=server_side))
        with open(os.path.join(work, "proxy.toml"), "w") as f:
            f.write(f"""[listen]
address = "127.0.0.1:{ports['proxy']}"
[limits]
max_clients = 20000
[[backends]]
id = "a"
address = "127.0.0.1:{ports['a']}"
[[backends]]
id = "b"
address = "127.0.0.1:{ports['b']}"
""")
        with open(os.path.join(work, "nutcracker.yml"), "w") as f:
            f.write(f"""pool:
  listen: 127.0.0.1:{ports['twemproxy']}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - 127.0.0.1:{ports['a']}:1
   - 127.0.0.1:{ports['b']}:1
""")
        for name in ("a", "b"):
            wait_port(ports[name])
        proxy = subprocess.Popen([PROXY, "--config", os.path.join(work, "proxy.toml")],
                                 stderr=subprocess.DEVNULL, preexec_fn=server_side)
        twem = subprocess.Popen(["nutcracker", "-c", os.path.join(work, "nutcracker.yml")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=server_side)
        procs += [proxy, twem]
        wait_port(ports["proxy"])
        wait_port(ports["twemproxy"])

        # The process whose CPU each request costs: for "direct", Redis a itself.
        targets = [("direct", ports["a"], procs[0].pid), ("twemproxy", ports["twemproxy"], twem.pid),
                   ("proxy", ports["proxy"], proxy.pid)]
        workloads = [
            ("GET P1", lambda p: redis_benchmark(p, "get", 1, 200_000)),
            ("SET P1", lambda p: redis_benchmark(p, "set", 1, 200_000)),
            ("GET P16", lambda p: redis_benchmark(p, "get", 16, 1_000_000)),
            ("SET P16", lambda p: redis_benchmark(p, "set", 16, 1_000_000)),
            ("django mix", lambda p: django_mix(p, 200_000)),
        ]
        # Fill the keyspace through every target first (each proxy places keys
        # its own way), so that GETs return 400-byte values from the first
        # round on instead of nulls. 500k random SETs over 100k keys leave
        # fewer than 1% of them unset.
        for _, port, _ in targets:
            redis_benchmark(port, "set", 16, 500_000)
        results = {}
        for round_ in range(ROUNDS):
            for label, run in workloads:
                for name, port, pid in targets:
                    before = cpu_seconds(pid) if pid else 0
                    r = run(port)
                    if pid:
                        r["cpu_s_per_m"] = (cpu_seconds(pid) - before) / r["requests"] * 1e6
                    results.setdefault((label, name), []).append(r)
            print(f"round {round_ + 1}/{ROUNDS} done", file=sys.stderr)

        def median(label, name, key):
            values = [r[key] for r in results[(label, name)] if key in r]
            return statistics.median(values) if values else float("nan")

        lines = ["| workload | target | req/s | p50 ms | p99 ms | CPU s / M req | vs direct | vs twemproxy |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for label, _ in workloads:
            direct = median(label, "direct", "rps")
            twemproxy = median(label, "twemproxy", "rps")
            for name, _, pid in targets:
                rps = median(label, name, "rps")
                cpu = f"{median(label, name, 'cpu_s_per_m'):.2f}" if pid else "-"
                lines.append(
                    f"| {label} | {name} | {rps:,.0f} | {median(label, name, 'p50_ms'):.3f} | "
                    f"{median(label, name, 'p99_ms'):.3f} | {cpu} | {rps / direct:.2f} | {rps / twemproxy:.2f} |")
        print("\n".join(lines))
        # The ratios round by round: how far one run on this machine can stray.
        print("\nproxy ratios per round (min / median / max):")
        for label, _ in workloads:
            def per_round(other):
                return sorted(p["rps"] / o["rps"] for p, o in
                              zip(results[(label, "proxy")], results[(label, other)]))
            spread = [f"vs {other} {r[0]:.2f} / {statistics.median(r):.2f} / {r[-1]:.2f}"
                      for other, r in (("direct", per_round("direct")), ("twemproxy", per_round("twemproxy")))]
            print(f"  {label}: " + ", ".join(spread))
        print(f"\nsession-proxy peak RSS over the runs: {rss_kib(proxy.pid, 'VmHWM') / 1024:.1f} MiB")
        # The medians as JSON, for benches/charts.py (the README's chart).
        summary = {
            "rounds": ROUNDS,
            "pinned": bool(PIN),
            "workloads": [label for label, _ in workloads],
            "targets": [name for name, _, _ in targets],
            "rps": {label: {name: median(label, name, "rps") for name, _, _ in targets}
                    for label, _ in workloads},
            "cpu_s_per_m": {label: {name: median(label, name, "cpu_s_per_m") for name, _, pid in targets if pid}
                            for label, _ in workloads},
            "p99_ms": {label: {name: median(label, name, "p99_ms") for name, _, _ in targets}
                       for label, _ in workloads},
        }
        os.makedirs(RESULTS_DIR, exist_ok=True)
        with open(os.path.join(RESULTS_DIR, "load.json"), "w") as f:
            json.dump(summary, f, indent=1)

        # Connection scale: 10,000 idle clients held open plus the session mix.
        base = rss_kib(proxy.pid)
        loadgen = subprocess.Popen(
            [LOADGEN, "--port", str(ports["proxy"]), "--connections", "50", "--requests", "100000",
             "--idle", "10000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=client_side)
        peak = base
        while loadgen.poll() is None:
            peak = max(peak, rss_kib(proxy.pid))
            time.sleep(0.05)
        out, err = loadgen.communicate()
        scale = json.loads(out.strip().splitlines()[-1])
        per_conn = (peak - base) * 1024 / max(scale["idle"], 1)
        print(f"\n{scale['idle']} idle clients: RSS {base / 1024:.1f} MiB -> {peak / 1024:.1f} MiB, "
              f"{per_conn / 1024:.2f} KiB per idle connection; session mix meanwhile: "
              f"{scale['rps']:,.0f} req/s, p50 {scale['p50_ms']:.3f} ms, p99 {scale['p99_ms']:.3f} ms, "
              f"{scale['errors']} errors")
        cpu_model = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        print(f"\nmachine: {os.cpu_count()} cores ({cpu_model}), "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
              f"{ROUNDS} interleaved rounds, medians"
              + ("; load generators pinned to core 0, servers and proxies to the others" if PIN else
                 "; processes placed by the scheduler"))
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
