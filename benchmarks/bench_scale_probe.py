"""Per-row costs at ResNet-50 widths, measured here, from which docs/scale.md extrapolates.

On ``--n-base`` rows of ``--dim`` dimensions (Fashion-MNIST pixels / 255 under a Gaussian random
projection from 784 to ``--dim``; the queries are test pixels projected alike) it measures, each
in a fresh subprocess so that peak RSS is its own:

* hnsw (M = 16, ef_construction = 200): build wall and CPU seconds, index file bytes per row,
  resident memory (``/proc/self/statm``) added by the build, per row — hnswlib's in-memory cost
  per vector; queries/s at ef = 200, k = 10;
* exact (``ExactIndex``, torch, CPU): queries/s for ``--n-query`` queries against the base, and
  the GEMM rate it implies, ``2 * n_query * n_base * dim`` flop per second.

Run from the repository root::

    python benchmarks/bench_scale_probe.py --dim 2048 --n-base 20000 --n-query 2000 -o benchmarks/results/scale_probe.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--n-base", type=int, default=20000)
    p.add_argument("--n-query", type=int, default=2000)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--num-threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    from knntools.io.datasets import load_dataset

    X = load_dataset("fashion-mnist", split="train", data_dir=FMNIST_DIR).X.reshape(-1, 784)[: args.n_base].astype(np.float32)
    Q = load_dataset("fashion-mnist", split="test", data_dir=FMNIST_DIR).X.reshape(-1, 784)[: args.n_query].astype(np.float32)
    R = (np.random.default_rng(args.seed).standard_normal((784, args.dim)) / np.sqrt(args.dim)).astype(np.float32)
    return np.ascontiguousarray(X @ R), np.ascontiguousarray(Q @ R)


def rss_now() -> int:
    """Current resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    from knntools.search import make_index

    X, Q = data(args)
    nt = args.num_threads
    out: dict[str, Any] = {}
    if mode == "hnsw":
        make_index("hnsw", num_threads=nt).fit(X[:100]).kneighbors(Q[:10], 3)  # libraries loaded before measuring
        before = rss_now()
        w0, c0 = time.perf_counter(), time.process_time()
        index = make_index("hnsw", num_threads=nt, seed=args.seed).fit(X)
        out["build_s"], out["build_cpu_s"] = time.perf_counter() - w0, time.process_time() - c0
        out["rss_added"] = rss_now() - before
        w0 = time.perf_counter()
        index.kneighbors(Q, args.k)
        out["query_s"] = time.perf_counter() - w0
        path = Path(f"/tmp/probe-{os.getpid()}.hnsw")
        index.save(path)
        out["file_bytes"] = path.stat().st_size
        path.unlink()
        Path(str(path) + ".json").unlink()
    else:
        import torch

        torch.set_num_threads(nt)
        index = make_index("exact", device="cpu", num_threads=nt).fit(X)
        index.kneighbors(Q[:64], args.k)  # warm-up
        w0, c0 = time.perf_counter(), time.process_time()
        index.kneighbors(Q, args.k)
        out["query_s"], out["query_cpu_s"] = time.perf_counter() - w0, time.process_time() - c0
    out["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, __file__, "--child", mode, "--dim", str(args.dim), "--n-base", str(args.n_base), "--n-query", str(args.n_query),
            "-k", str(args.k), "--num-threads", str(args.num_threads), "--seed", str(args.seed)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args, args.child)))
        return
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    hn = run(args, "hnsw")
    ex = run(args, "exact")
    n, d, nq = args.n_base, args.dim, args.n_query
    flop = 2.0 * nq * n * d
    lines = [
        "# Per-row costs at ResNet-50 widths",
        "",
        f"`python benchmarks/bench_scale_probe.py {shlex.join(sys.argv[1:])}` — {started}, {platform.machine()} with {os.cpu_count()} cores, "
        f"{args.num_threads} threads. Load: `{uptime}` (shared machine: wall times are pessimistic; CPU seconds are less sensitive).",
        "",
        f"Data: {n} rows x {d}-d (Fashion-MNIST pixels / 255, Gaussian random projection), {nq} queries, k = {args.k}.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| hnsw build (M 16, ef_construction 200) | {hn['build_s']:.1f} s wall, {hn['build_cpu_s']:.1f} s CPU = {1e3 * hn['build_cpu_s'] / n:.2f} CPU-ms per row |",
        f"| hnsw index file | {hn['file_bytes'] / n:.0f} bytes per row (4d = {4 * d}) |",
        f"| hnsw resident memory added by the build | {hn['rss_added'] / n:.0f} bytes per row |",
        f"| hnsw queries/s (ef 200) | {nq / hn['query_s']:.0f} |",
        f"| exact queries/s | {nq / ex['query_s']:.0f} ({ex['query_cpu_s']:.1f} s CPU) |",
        f"| exact GEMM rate | {flop / ex['query_s'] / 1e9:.0f} GFLOP/s wall, {flop / ex['query_cpu_s'] / 1e9:.0f} GFLOP/s per CPU-second |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
