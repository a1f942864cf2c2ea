"""Benchmark the search layer on one data set: ours against the libraries it wraps or must beat.

For each dimension d (Fashion-MNIST pixels at d = 784; Gaussian random projections of them at
smaller d, or Gaussian noise with ``--data random``):

* exact: ``knntools`` ExactIndex (torch) vs ``sklearn.neighbors.NearestNeighbors(algorithm="brute")``,
  same threads, fit + kneighbors of every query; the neighbour sets must agree;
* hnsw: ``knntools`` HnswIndex vs raw ``hnswlib`` with the same M, ef_construction, ef, seed and
  threads: build time, queries per second and the adapter's overhead; recall@k of both against exact.

Optionally (``--activations TRAIN.h5 TEST.h5``) the recall@k of the default hnsw settings on one
layer of real activation files.

Timings are the minimum over ``--repeat`` interleaved runs whose order alternates (the machine is shared;
minima are the least noisy); CPU seconds of the process are reported beside wall seconds.
Run from the repository root::

    python benchmarks/bench_search.py --n-base 60000 --n-query 10000 -o benchmarks/results/search.md
    python benchmarks/bench_search.py --n-base 5000 --n-query 500 --dims 64     # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-base", type=int, default=60000, help="base rows (default 60000)")
    p.add_argument("--n-query", type=int, default=10000, help="query rows (default 10000)")
    p.add_argument("--dims", default="64,256,784", help="comma-separated dimensions (default 64,256,784)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--data", choices=("fmnist", "random"), default="fmnist" if FMNIST_DIR.is_dir() else "random",
                   help="fmnist: Fashion-MNIST pixels (train as base, test as queries) and random projections of them; random: Gaussian rows")
    p.add_argument("--num-threads", type=int, default=os.cpu_count(), help="threads for every library (default: all cores)")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, default=None, help="hnsw search breadth (default: knntools' default, max(200, 2k))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="runs per timing; the minimum is reported")
    p.add_argument("--query-repeat", type=int, default=5, help="runs per hnsw query timing (cheap; more runs, steadier minima)")
    p.add_argument("--skip-sklearn", action="store_true", help="do not time scikit-learn")
    p.add_argument("--activations", nargs=2, metavar=("TRAIN", "TEST"), help="also measure hnsw recall@k on real activation files")
    p.add_argument("--layer", default="penultimate", help="layer of --activations (default penultimate)")
    p.add_argument("-o", "--output", type=Path, help="write the markdown report here (also printed)")
    p.add_argument("--append", action="store_true", help="append to --output instead of replacing it")
    return p.parse_args(argv)


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(minimum wall time over ``repeat`` runs, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def wall_and_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process over all its threads, result) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w0, time.process_time() - c0, result


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Base and query rows at d = 784 (pixels in [0, 1], or Gaussian)."""
    if args.data == "fmnist":
        from knntools.io.datasets import load_dataset

        train = load_dataset("fashion-mnist", split="train", data_dir=FMNIST_DIR).X.reshape(-1, 784)
        test = load_dataset("fashion-mnist", split="test", data_dir=FMNIST_DIR).X.reshape(-1, 784)
        if args.n_base > len(train) or args.n_query > len(test):
            sys.exit(f"fashion-mnist has {len(train)} train / {len(test)} test rows; lower --n-base/--n-query")
        return np.ascontiguousarray(train[: args.n_base]), np.ascontiguousarray(test[: args.n_query]), "Fashion-MNIST pixels / 255"
    rng = np.random.default_rng(args.seed)
    return (rng.standard_normal((args.n_base, 784), dtype=np.float32), rng.standard_normal((args.n_query, 784), dtype=np.float32),
            "Gaussian N(0, 1)")


def project(X: np.ndarray, Q: np.ndarray, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian random projection to ``d`` dimensions (identity when ``d`` is the input width)."""
    if d == X.shape[1]:
        return X, Q
    R = np.random.default_rng(seed).standard_normal((X.shape[1], d)).astype(np.float32) / np.sqrt(d)
    return np.ascontiguousarray(X @ R), np.ascontiguousarray(Q @ R)


def bench_dim(X: np.ndarray, Q: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Time every contender on (X, Q); repeats are interleaved so each sees the same machine load."""
    import hnswlib
    import torch
    from threadpoolctl import threadpool_limits

    from knntools.search import make_index
    from knntools.search.base import recall_at_k
    from knntools.search.hnsw import default_ef

    k, nt = args.k, args.num_threads
    ef = args.ef if args.ef is not None else default_ef(k)
    torch.set_num_threads(nt)

    def ours_exact() -> Any:
        return make_index("exact", metric="l2", device="cpu").fit(X).kneighbors(Q, k)

    def sklearn_brute() -> Any:
        from sklearn.neighbors import NearestNeighbors

        with threadpool_limits(limits=nt):
            return NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean", n_jobs=nt).fit(X).kneighbors(Q, k)

    def ours_build() -> Any:
        return make_index("hnsw", M=args.M, ef_construction=args.ef_construction, ef=ef, num_threads=nt, seed=args.seed).fit(X)

    def raw_build() -> Any:
        index = hnswlib.Index(space="l2", dim=X.shape[1])
        index.init_index(max_elements=len(X), M=args.M, ef_construction=args.ef_construction, random_seed=args.seed)
        index.add_items(X, np.arange(len(X)), num_threads=nt)
        index.set_ef(ef)
        return index

    times: dict[str, float] = {}
    results: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        results.pop(name, None)  # free the previous run's index before building the next
        wall, cpu, results[name] = wall_and_cpu(fn)
        times[name] = min(times.get(name, float("inf")), wall)
        cpu_name = name.replace("_s", "_cpu_s")
        times[cpu_name] = min(times.get(cpu_name, float("inf")), cpu)
        return results[name]

    for rep in range(args.repeat):
        # alternate who goes first, so neither always meets a warmer or a more fragmented process
        pairs = [("exact_s", ours_exact)] + ([] if args.skip_sklearn else [("sklearn_s", sklearn_brute)])
        for name, fn in pairs if rep % 2 == 0 else pairs[::-1]:
            timed(name, fn)
        builds = [("hnsw_build_s", ours_build), ("raw_build_s", raw_build)]
        for name, fn in builds if rep % 2 == 0 else builds[::-1]:
            timed(name, fn)
    ours, raw = results["hnsw_build_s"], results["raw_build_s"]
    queries = [("hnsw_query_s", lambda: ours.kneighbors(Q, k)), ("raw_query_s", lambda: raw.knn_query(Q, k=k, num_threads=nt))]
    for rep in range(args.query_repeat):
        for name, fn in queries if rep % 2 == 0 else queries[::-1]:
            timed(name, fn)

    exact_i = results["exact_s"][1]
    row: dict[str, Any] = {"d": X.shape[1], "ef": ef, **times}
    if not args.skip_sklearn:
        row["exact_vs_sklearn_agreement"] = recall_at_k(exact_i, results["sklearn_s"][1])
    row["hnsw_recall"] = recall_at_k(results["hnsw_query_s"][1], exact_i)
    row["raw_recall"] = recall_at_k(results["raw_query_s"][0].astype(np.int64), exact_i)
    return row


def bench_activations(args: argparse.Namespace) -> dict[str, Any]:
    """recall@k of default hnsw settings on one layer of real activation files."""
    import torch

    from knntools.io.h5 import KFile
    from knntools.search import make_index
    from knntools.search.base import recall_at_k

    torch.set_num_threads(args.num_threads)
    with KFile(args.activations[0], kind=("activations", "features")) as tf, KFile(args.activations[1], kind=("activations", "features")) as qf:
        layer = tf.resolve_layers(args.layer)[0]
        X, Q = tf.read_layer(layer), qf.read_layer(layer)
    t_exact, (_, exact_i) = best_of(1, lambda: make_index("exact").fit(X).kneighbors(Q, args.k))
    index = make_index("hnsw", num_threads=args.num_threads)
    t_build, _ = best_of(1, lambda: index.fit(X))
    t_query, (_, hnsw_i) = best_of(1, lambda: index.kneighbors(Q, args.k))
    return {"layer": layer, "n_base": len(X), "n_query": len(Q), "d": X.shape[1], "exact_s": t_exact, "hnsw_build_s": t_build,
            "hnsw_query_s": t_query, "recall": recall_at_k(hnsw_i, exact_i), "ef": index.effective_ef(args.k)}


def report(args: argparse.Namespace, what: str, rows: list[dict[str, Any]], act: dict[str, Any] | None, started: str, load: str) -> str:
    import hnswlib  # noqa: F401
    import sklearn
    import torch

    k, nq = args.k, args.n_query
    cmd = "python benchmarks/bench_search.py " + shlex.join(sys.argv[1:])
    lines = [
        "# Search benchmark",
        "",
        f"`{cmd}` — {started}, {platform.machine()} with {os.cpu_count()} cores, load average at start {load};",
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}, hnswlib; "
        f"{args.num_threads} threads for every library; timings are the minimum of {args.repeat} interleaved run(s) "
        f"({args.query_repeat} for hnsw queries), alternating which contender goes first.",
    ]
    if rows:
        lines += [
            "",
            f"Data: {what}; {args.n_base} base rows, {nq} queries, k = {k}; smaller d are Gaussian random projections of the same rows.",
            "",
            "## Exact search (fit + all queries)",
            "",
            "Wall seconds, and CPU seconds of the process (all threads; less sensitive to other load on a shared machine).",
            "",
            "| d | knntools exact (torch) wall / CPU s | sklearn brute wall / CPU s | speed-up wall / CPU | neighbour sets agree |",
            "|---|---|---|---|---|",
        ]
    for r in rows:
        sk = r.get("sklearn_s")
        if sk is None:
            lines.append(f"| {r['d']} | {r['exact_s']:.2f} / {r['exact_cpu_s']:.2f} | – | – | – |")
        else:
            lines.append(f"| {r['d']} | {r['exact_s']:.2f} / {r['exact_cpu_s']:.2f} | {sk:.2f} / {r['sklearn_cpu_s']:.2f} | "
                         f"{sk / r['exact_s']:.2f}x / {r['sklearn_cpu_s'] / r['exact_cpu_s']:.2f}x | {r['exact_vs_sklearn_agreement']:.4f} |")
    if rows:
        lines += [
            "",
            f"## hnsw (M = {args.M}, ef_construction = {args.ef_construction}, ef = {rows[0]['ef']}): knntools adapter vs raw hnswlib",
            "",
            "| d | build wall s (ours / raw) | build overhead wall / CPU | queries/s wall (ours / raw) | query overhead wall / CPU | recall@%d (ours / raw) |" % k,
            "|---|---|---|---|---|---|",
        ]
    for r in rows:
        bo, bc = r["hnsw_build_s"] / r["raw_build_s"] - 1, r["hnsw_build_cpu_s"] / r["raw_build_cpu_s"] - 1
        qo, qc = r["hnsw_query_s"] / r["raw_query_s"] - 1, r["hnsw_query_cpu_s"] / r["raw_query_cpu_s"] - 1
        lines.append(f"| {r['d']} | {r['hnsw_build_s']:.2f} / {r['raw_build_s']:.2f} | {bo:+.1%} / {bc:+.1%} | "
                     f"{nq / r['hnsw_query_s']:.0f} / {nq / r['raw_query_s']:.0f} | {qo:+.1%} / {qc:+.1%} | "
                     f"{r['hnsw_recall']:.4f} / {r['raw_recall']:.4f} |")
    if act is not None:
        lines += [
            "",
            f"## Default hnsw settings on activations ({args.activations[0]}, layer {act['layer']})",
            "",
            f"{act['n_base']} x {act['d']} base, {act['n_query']} queries, k = {k}, ef = {act['ef']}: recall@{k} = **{act['recall']:.5f}**; "
            f"build {act['hnsw_build_s']:.2f} s, {act['n_query'] / act['hnsw_query_s']:.0f} queries/s; exact {act['exact_s']:.2f} s.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    dims = [int(s) for s in args.dims.split(",") if s.strip()]
    X784, Q784, what = load_data(args) if dims else (None, None, "none (--dims '')")
    rows = []
    for d in dims:
        X, Q = project(X784, Q784, d, args.seed)
        print(f"d={d}: running…", file=sys.stderr, flush=True)
        rows.append(bench_dim(X, Q, args))
        print(f"d={d}: {rows[-1]}", file=sys.stderr, flush=True)
    act = bench_activations(args) if args.activations else None
    text = report(args, what, rows, act, started, load)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "a" if args.append else "w") as f:
            f.write(("\n" if args.append else "") + text)


if __name__ == "__main__":
    main()
