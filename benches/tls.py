#!/usr/bin/env python3
"""The TLS benchmark (`benches/load.sh --tls`): what TLS costs a direct Redis
and what it costs the proxy, side by side in one run, interleaved rounds.

One redis-server with a plain port and a `--tls-port`; proxy "plain+tls"
with a plain listener and a TLS listener over the plain port, proxy
"tls>tls" with a TLS listener over the TLS port. redis-benchmark (GET, 50
clients, 400-byte values, pipeline 1 and 16, `--tls` where the target
speaks it) drives each; the CPU each request costs the process under test
is read from /proc. Prints, per workload, requests per second, p99 and CPU
microseconds per request, then the TLS/plain ratios the issue sets targets
on: the proxy's CPU ratio against direct Redis's, and TLS throughput
through the proxy against direct Redis's over TLS. ROUNDS=n changes the
round count (default 5). BASELINE=path runs another build of the proxy (an
older commit's target/release/session-proxy) beside this one, in the same
interleaved rounds. Certificates are made with openssl in a temp dir.
"""

import os
import statistics
import subprocess
import sys
import tempfile

from load import PROXY, ROUNDS, cpu_seconds, client_side, server_side
from ports import free_port, wait_port


def certificates(work):
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=work, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(work, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=bench-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=server")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return {name: os.path.join(work, name) for name in ("ca.crt", "server.crt", "server.key")}


def benchmark(port, pipeline, requests, tls, certs):
    """One redis-benchmark GET run: 50 clients, 400-byte values, random keys."""
    extra = ["--tls", "--cacert", certs["ca.crt"]] if tls else []
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "get", "-c", "50",
         "-n", str(requests), "-P", str(pipeline), "-d", "400", "-r", "100000", "--csv", *extra],
        capture_output=True, text=True, check=True, preexec_fn=client_side).stdout
    row = [l for l in out.splitlines() if l.startswith('"GET')][0]
    values = [v.strip('"') for v in row.split(",")]
    return {"requests": requests, "rps": float(values[1]), "p99_ms": float(values[6])}


def main():
    work = tempfile.mkdtemp(prefix="session-proxy-tls-bench-")
    certs = certificates(work)
    procs = []
    try:
        ports = {name: free_port() for name in ("plain", "tls")}
        builds = [("", PROXY)]
        if os.environ.get("BASELINE"):
            builds.append(("baseline ", os.environ["BASELINE"]))
        redis = subprocess.Popen(
            ["redis-server", "--port", str(ports["plain"]), "--tls-port", str(ports["tls"]),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work,
             "--tls-cert-file", certs["server.crt"], "--tls-key-file", certs["server.key"],
             "--tls-ca-cert-file", certs["ca.crt"], "--tls-auth-clients", "no"],
            stdout=subprocess.DEVNULL, preexec_fn=server_side)
        procs.append(redis)
        def listener(port):
            return (f'tls = {{ address = "127.0.0.1:{port}", cert = "{certs["server.crt"]}", '
                    f'key = "{certs["server.key"]}" }}')
        # (name, port, TLS, the process whose CPU counts)
        targets = [
            ("direct", ports["plain"], False, redis.pid),
            ("direct TLS", ports["tls"], True, redis.pid),
        ]
        for build, binary in builds:
            plain, tls, tls2 = free_port(), free_port(), free_port()
            # Both listen in plain and TLS; one over the plain port, one over TLS.
            configs = {
                "plain+tls": (plain, tls, f'address = "127.0.0.1:{ports["plain"]}"'),
                "tls>tls": (free_port(), tls2, f'url = "rediss://127.0.0.1:{ports["tls"]}"\n'
                                               f'tls = {{ ca = "{certs["ca.crt"]}" }}'),
            }
            configs = {name: f'[listen]\naddress = "127.0.0.1:{listen}"\n{listener(secure)}\n'
                             f'[[backends]]\nid = "a"\n{backend}\n'
                       for name, (listen, secure, backend) in configs.items()}
            proxies = {}
            for name, text in configs.items():
                path = os.path.join(work, f"{build}{name}.toml")
                with open(path, "w") as f:
                    f.write(text)
                proxies[name] = subprocess.Popen([binary, "--config", path], stderr=subprocess.DEVNULL,
                                                 preexec_fn=server_side)
                procs.append(proxies[name])
            for port in (plain, tls, tls2):
                wait_port(port)
            targets += [
                (f"{build}proxy", plain, False, proxies["plain+tls"].pid),
                (f"{build}proxy TLS, plain backend", tls, True, proxies["plain+tls"].pid),
                (f"{build}proxy TLS, TLS backend", tls2, True, proxies["tls>tls"].pid),
            ]
        for port in ports.values():
            wait_port(port)
        workloads = [("GET P1", 1, 200_000), ("GET P16", 16, 1_000_000)]
        # The keyspace filled, so that GETs return 400-byte values.
        subprocess.run(["redis-benchmark", "-p", str(ports["plain"]), "-t", "set", "-c", "50",
                        "-n", "500000", "-P", "16", "-d", "400", "-r", "100000", "-q"],
                       check=True, stdout=subprocess.DEVNULL, preexec_fn=client_side)
        results = {}
        for round_ in range(ROUNDS):
            for label, pipeline, requests in workloads:
                for name, port, tls, pid in targets:
                    before = cpu_seconds(pid)
                    r = benchmark(port, pipeline, requests, tls, certs)
                    r["cpu_us"] = (cpu_seconds(pid) - before) / requests * 1e6
                    results.setdefault((label, name), []).append(r)
            print(f"round {round_ + 1}/{ROUNDS} done", file=sys.stderr)

        def values(label, name, key):
            return sorted(r[key] for r in results[(label, name)])

        def median(label, name, key):
            return statistics.median(values(label, name, key))

        lines = ["| workload | target | req/s | p99 ms | CPU µs / request (min-max) |",
                 "|---|---|---:|---:|---:|"]
        for label, _, _ in workloads:
            for name, _, _, _ in targets:
                cpu = values(label, name, "cpu_us")
                lines.append(f"| {label} | {name} | {median(label, name, 'rps'):,.0f} | "
                             f"{median(label, name, 'p99_ms'):.3f} | "
                             f"{statistics.median(cpu):.2f} ({cpu[0]:.2f}-{cpu[-1]:.2f}) |")
        print("\n".join(lines))
        print("\nTLS/plain, medians (per round min-max):")
        for label, _, _ in workloads:
            def ratio(tls_name, plain_name, key):
                per_round = sorted(t[key] / p[key] for t, p in
                                   zip(results[(label, tls_name)], results[(label, plain_name)]))
                return f"{statistics.median(per_round):.2f} ({per_round[0]:.2f}-{per_round[-1]:.2f})"
            print(f"  {label}: CPU per request: direct Redis {ratio('direct TLS', 'direct', 'cpu_us')}")
            for build, _ in builds:
                print(f"  {label}: {build}proxy CPU per request: over plain backends "
                      f"{ratio(build + 'proxy TLS, plain backend', build + 'proxy', 'cpu_us')}, "
                      f"over TLS backends {ratio(build + 'proxy TLS, TLS backend', build + 'proxy', 'cpu_us')}; "
                      f"throughput over TLS backends / direct TLS "
                      f"{ratio(build + 'proxy TLS, TLS backend', 'direct TLS', 'rps')}")
        print(f"\nmachine: {os.cpu_count()} cores; {ROUNDS} interleaved rounds, medians")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
