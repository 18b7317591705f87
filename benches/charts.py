"""Renders the load benchmark's medians (target/bench/load.json, written by
benches/load.py) as SVG charts in docs/: requests per second per workload for
a direct Redis, twemproxy and session-proxy, and the proxies' CPU per
request. Run by benches/load.sh after the benchmark, with matplotlib from
the venv it creates."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
COLOURS = {"direct": "#8c959f", "twemproxy": "#d29922", "proxy": "#0969da"}
NAMES = {"direct": "Redis, direct", "twemproxy": "twemproxy", "proxy": "session-proxy"}


def bars(ax, data, workloads, targets, fmt):
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        values = [data[w].get(target, float("nan")) for w in workloads]
        xs = [x + (i - (len(targets) - 1) / 2) * width for x in range(len(workloads))]
        drawn = ax.bar(xs, values, width, label=NAMES[target], color=COLOURS[target])
        ax.bar_label(drawn, labels=[fmt(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "bench", "load.json")
    with open(path) as f:
        run = json.load(f)
    workloads, targets = run["workloads"], run["targets"]
    placement = "load generator pinned" if run["pinned"] else "scheduler's placement"
    note = f"{run['rounds']} interleaved rounds, medians; 2 backends; {placement}"

    fig, ax = plt.subplots(figsize=(9, 4))
    bars(ax, run["rps"], workloads, targets, lambda v: f"{v / 1000:.0f}k")
    ax.set_ylabel("requests per second")
    ax.set_title("Throughput (higher is better)\n" + note, fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs", "bench-throughput.svg"))

    fig, ax = plt.subplots(figsize=(9, 4))
    proxies = [t for t in targets if t != "direct"]
    bars(ax, run["cpu_s_per_m"], workloads, proxies, lambda v: f"{v:.2f}")
    ax.set_ylabel("proxy CPU seconds per million requests")
    ax.set_title("CPU per request (lower is better)\n" + note, fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs", "bench-cpu.svg"))
    print("charts: docs/bench-throughput.svg, docs/bench-cpu.svg")


if __name__ == "__main__":
    main()
