"""Benchmark the search layer on one data set: ours against the libraries it wraps or must beat.

For each dimension d (Fashion-MNIST pixels at d = 784; Gaussian random projections of them at
other d, or Gaussian noise with ``--data random``) and each k:

* exact: ``knntools`` ExactIndex vs ``sklearn.neighbors.NearestNeighbors(algorithm="brute")`` vs
  ``faiss.IndexFlatL2`` (faiss-cpu, the ``bench`` extra), same threads, fit + kneighbors of every
  query; the neighbour sets must agree; and the GEMM bound ``2 N Q d / peak``, where ``peak`` is the
  fastest float32 GEMM measured in the same run (numpy's BLAS and torch, same threads, at this d).
  Each target is printed with its ratio and PASS / FALL SHORT (issue 15: >= 1.8x scikit-learn and
  >= 3x faiss at every d >= 256; within 1.5x of the bound);
* hnsw (``--hnsw``): ``knntools`` HnswIndex vs raw ``hnswlib`` with the same M, ef_construction,
  ef, seed and threads: build time, queries per second and the adapter's overhead; recall@k.

Benchmark with the BLAS kernel a user gets: if the machine sets ``OPENBLAS_CORETYPE`` or
``OPENBLAS_L2_SIZE`` (they slow numpy's OpenBLAS), unset them for this command only; the report
names the kernel (threadpoolctl)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_search.py -o benchmarks/results/search.md
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_search.py --quick   # 20k x 2k, a few minutes

Optionally (``--activations TRAIN.h5 TEST.h5``) the recall@k of the default hnsw settings on one
layer of real activation files.

Timings are the minimum over ``--repeat`` interleaved runs whose order alternates (the machine is shared;
minima are the least noisy); CPU seconds of the process are reported beside wall seconds.
Run from the repository root::

    python benchmarks/bench_search.py --n-base 5000 --n-query 500 --dims 64 --ks 10 --repeat 1   # smoke test
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# knntools before numpy, as the `knntools` command imports it: it sets OPENBLAS_THREAD_TIMEOUT
# (knntools/__init__.py) before OpenBLAS loads. Every contender in this process shares it.
import knntools  # noqa: E402,F401
import numpy as np  # noqa: E402

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-base", type=int, default=60000, help="base rows (default 60000)")
    p.add_argument("--n-query", type=int, default=10000, help="query rows (default 10000)")
    p.add_argument("--dims", default="64,256,784,3200", help="comma-separated dimensions (default 64,256,784,3200)")
    p.add_argument("--ks", default="10,75", help="comma-separated neighbours per query (default 10,75)")
    p.add_argument("--quick", action="store_true", help="20000 base rows, 2000 queries (iteration size)")
    p.add_argument("--precisions", default="float32", help="knntools precisions to time (default float32; e.g. float32,bfloat16)")
    p.add_argument("--skip-faiss", action="store_true", help="do not time faiss")
    p.add_argument("--hnsw", action="store_true", help="also compare the hnsw adapter with raw hnswlib")
    p.add_argument("--data", choices=("fmnist", "random"), default="fmnist" if FMNIST_DIR.is_dir() else "random",
                   help="fmnist: Fashion-MNIST pixels (train as base, test as queries) and random projections of them; random: Gaussian rows")
    p.add_argument("--num-threads", type=int, default=os.cpu_count(), help="threads for every library (default: all cores)")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, default=None, help="hnsw search breadth (default: knntools' default, max(200, 2k))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=2, help="runs per timing; the minimum is reported (default 2)")
    p.add_argument("--query-repeat", type=int, default=5, help="runs per hnsw query timing (cheap; more runs, steadier minima)")
    p.add_argument("--skip-sklearn", action="store_true", help="do not time scikit-learn")
    p.add_argument("--activations", nargs=2, metavar=("TRAIN", "TEST"), help="also measure hnsw recall@k on real activation files")
    p.add_argument("--layer", default="penultimate", help="layer of --activations (default penultimate)")
    p.add_argument("-o", "--output", type=Path, help="write the markdown report here (also printed)")
    p.add_argument("--append", action="store_true", help="append to --output instead of replacing it")
    args = p.parse_args(argv)
    if args.quick:
        args.n_base, args.n_query = 20000, 2000
    args.k = max(int(s) for s in args.ks.split(","))
    return args


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


def measure_peak(d: int, nt: int, repeat: int = 3) -> dict[str, float]:
    """Fastest float32 GEMM at inner dimension ``d`` on ``nt`` threads, GFLOP/s: numpy's BLAS and torch.

    Shapes (1024 x d) @ (d x 16384) and (4096 x d) @ (d x 16384) (the tiles an exact search
    multiplies), best of ``repeat`` after a warm-up, each library's best shape.
    """
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    with threadpool_limits(limits=nt, user_api="blas"):
        torch.set_num_threads(nt)
        for qrows in (1024, 4096):
            A = rng.standard_normal((qrows, d), dtype=np.float32)
            B = rng.standard_normal((16384, d), dtype=np.float32)
            C = np.empty((qrows, 16384), np.float32)
            At, Bt, Ct = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(C)
            flops = 2.0 * qrows * 16384 * d
            for name, fn in (("numpy", lambda: np.matmul(A, B.T, out=C)), ("torch", lambda: torch.mm(At, Bt.t(), out=Ct))):
                fn()
                t, _ = best_of(repeat, fn)
                out[name] = max(out.get(name, 0.0), flops / t / 1e9)
    out["peak"] = max(out["numpy"], out["torch"])
    return out


def bench_exact(X: np.ndarray, Q: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Exact search at every k: knntools (each precision), scikit-learn brute, faiss IndexFlatL2; interleaved."""
    import torch
    from threadpoolctl import threadpool_limits

    from knntools.search import make_index
    from knntools.search.base import recall_at_k

    nt = args.num_threads
    torch.set_num_threads(nt)
    rows = []
    precisions = [p for p in args.precisions.split(",") if p]
    for k in (int(s) for s in args.ks.split(",")):
        def ours(prec: str) -> Callable[[], Any]:
            def run() -> Any:
                index = make_index("exact", metric="l2", device="cpu", num_threads=nt, precision=prec).fit(X)
                res = index.kneighbors(Q, k)
                stats[prec] = dict(getattr(index, "last_stats_", {}) or {})
                return res
            return run

        def sklearn_brute() -> Any:
            from sklearn.neighbors import NearestNeighbors

            with threadpool_limits(limits=nt):
                return NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean", n_jobs=nt).fit(X).kneighbors(Q, k)

        def faiss_flat() -> Any:
            import faiss

            faiss.omp_set_num_threads(nt)
            with threadpool_limits(limits=nt):
                index = faiss.IndexFlatL2(X.shape[1])
                index.add(X)
                dist, idx = index.search(Q, k)
            return np.sqrt(np.maximum(dist, 0)), idx

        stats: dict[str, dict] = {}
        contenders = [(f"ours_{p}", ours(p)) for p in precisions]
        if not args.skip_sklearn:
            contenders.append(("sklearn", sklearn_brute))
        if not args.skip_faiss:
            contenders.append(("faiss", faiss_flat))
        times: dict[str, float] = {}
        cpu: dict[str, float] = {}
        results: dict[str, Any] = {}
        for rep in range(args.repeat):
            order = contenders if rep % 2 == 0 else contenders[::-1]  # alternate who goes first
            for name, fn in order:
                results.pop(name, None)
                w, c, results[name] = wall_and_cpu(fn)
                times[name] = min(times.get(name, float("inf")), w)
                cpu[name] = min(cpu.get(name, float("inf")), c)
            print(f"  d={X.shape[1]} k={k} rep {rep + 1}: " + ", ".join(f"{n} {times[n]:.2f}s" for n, _ in contenders), file=sys.stderr, flush=True)
        ref = results[f"ours_{precisions[0]}"][1]
        row: dict[str, Any] = {"d": X.shape[1], "k": k, "times": times, "cpu": cpu, "stats": stats,
                               "agree": {n: recall_at_k(results[n][1], ref) for n in results if n != f"ours_{precisions[0]}"}}
        rows.append(row)
    return rows


def target_line(name: str, ratio: float, goal: float, higher_is_better: bool = True) -> str:
    ok = ratio >= goal if higher_is_better else ratio <= goal
    want = f">= {goal:g}x" if higher_is_better else f"<= {goal:g}x"
    return f"{name}: {ratio:.2f}x (target {want}) **{'PASS' if ok else 'FALL SHORT'}**"


def bench_dim(X: np.ndarray, Q: np.ndarray, args: argparse.Namespace, exact_i: np.ndarray) -> dict[str, Any]:
    """hnsw: the knntools adapter vs raw hnswlib (build, queries, recall against ``exact_i``); interleaved."""
    import hnswlib

    from knntools.search import make_index
    from knntools.search.base import recall_at_k
    from knntools.search.hnsw import default_ef

    k, nt = exact_i.shape[1], args.num_threads
    ef = args.ef if args.ef is not None else default_ef(k)

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
        builds = [("hnsw_build_s", ours_build), ("raw_build_s", raw_build)]
        for name, fn in builds if rep % 2 == 0 else builds[::-1]:
            timed(name, fn)
    ours, raw = results["hnsw_build_s"], results["raw_build_s"]
    queries = [("hnsw_query_s", lambda: ours.kneighbors(Q, k)), ("raw_query_s", lambda: raw.knn_query(Q, k=k, num_threads=nt))]
    for rep in range(args.query_repeat):
        for name, fn in queries if rep % 2 == 0 else queries[::-1]:
            timed(name, fn)

    row: dict[str, Any] = {"d": X.shape[1], "ef": ef, **times}
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


def machine_facts() -> dict[str, str]:
    """CPU model (lscpu), BLAS libraries and kernels (threadpoolctl), OPENBLAS_* variables."""
    import subprocess

    import torch  # noqa: F401  (loads MKL/oneDNN and libgomp so threadpoolctl sees them)
    from threadpoolctl import threadpool_info

    try:
        faiss_loaded = __import__("faiss") is not None
    except ImportError:
        faiss_loaded = False
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture', '?')} ({Path(i['filepath']).parent.parent.name}/{Path(i['filepath']).name.split('-')[0]})"
                     for i in threadpool_info() if i.get("user_api") == "blas")
    env = ", ".join(f"{v}={os.environ[v]}" for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS") if v in os.environ) or "none set"
    return {"cpu": model, "blas": blas + ("" if faiss_loaded else " (faiss not installed)"), "env": env}


def report(args: argparse.Namespace, what: str, rows: list[dict[str, Any]], peaks: dict[int, dict[str, float]], hnsw_rows: list[dict[str, Any]],
           act: dict[str, Any] | None, started: str, load: str, load_end: str, facts: dict[str, str]) -> str:
    import sklearn
    import torch

    nq, nb = args.n_query, args.n_base
    cmd = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_search.py " + shlex.join(sys.argv[1:])
    try:
        import faiss

        faiss_v = f"faiss-cpu {faiss.__version__}"
    except ImportError:
        faiss_v = "faiss not installed"
    lines = [
        "# Search benchmark",
        "",
        f"`{cmd}` — {started}; {facts['cpu']}, {platform.machine()} with {os.cpu_count()} cores; load average (1/5/15 min) at start {load}, at end {load_end}.",
        "",
        f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, {faiss_v}, numpy {np.__version__}; BLAS: {facts['blas']}; "
        f"environment: {facts['env']}. {args.num_threads} threads for every library; timings are the minimum of {args.repeat} "
        "interleaved run(s), alternating which contender goes first.",
    ]
    if rows:
        precs = [p for p in args.precisions.split(",") if p]
        lines += [
            "",
            f"Data: {what}; {nb} base rows, {nq} queries; d != 784 are Gaussian random projections of the same rows.",
            "",
            "## Exact search (fit + all queries): wall seconds (CPU seconds of the process, all threads)",
            "",
            "`peak` is the fastest float32 GEMM measured in this run at this d (numpy's BLAS and torch, same threads); "
            "`bound` = 2·N·Q·d / peak. Ratios: sklearn / knntools and faiss / knntools (higher is better), knntools / bound (lower is better).",
            "",
            "| d | k | knntools " + " | knntools ".join(precs) + " | sklearn brute | faiss IndexFlatL2 | bound (peak GFLOP/s: numpy / torch) | vs sklearn | vs faiss | vs bound | sets agree (sklearn / faiss) |",
            "|---|---|" + "---|" * len(precs) + "---|---|---|---|---|---|---|",
        ]
        targets = []
        for r in rows:
            t = r["times"]
            pk = peaks[r["d"]]
            bound = 2.0 * nb * nq * r["d"] / (pk["peak"] * 1e9)
            ours = t[f"ours_{precs[0]}"]
            sk, fa = t.get("sklearn"), t.get("faiss")
            c = r["cpu"]

            def cell(name: str) -> str:
                return f"{t[name]:.2f} ({c[name]:.2f})" if name in t else "–"

            cells = [cell(f"ours_{p}") for p in precs]
            extra = [f" [{r['stats'][p].get('certified', '?')}/{r['stats'][p].get('queries', '?')} certified]" if r["stats"].get(p) else "" for p in precs]
            cells = [c_ + e for c_, e in zip(cells, extra)]
            agree = " / ".join(f"{r['agree'][n]:.4f}" if n in r["agree"] else "–" for n in ("sklearn", "faiss"))
            lines.append(f"| {r['d']} | {r['k']} | " + " | ".join(cells) + f" | {cell('sklearn')} | {cell('faiss')} | {bound:.2f} ({pk['numpy']:.0f} / {pk['torch']:.0f}) | "
                         + (f"{sk / ours:.2f}x" if sk else "–") + " | " + (f"{fa / ours:.2f}x" if fa else "–") + f" | {ours / bound:.2f}x | {agree} |")
            tag = f"d = {r['d']}, k = {r['k']}"
            if r["d"] >= 256 and sk:
                targets.append(target_line(f"{tag}: knntools vs scikit-learn brute", sk / ours, 1.8))
            if r["d"] >= 256 and fa:
                targets.append(target_line(f"{tag}: knntools vs faiss IndexFlatL2", fa / ours, 3.0))
            targets.append(target_line(f"{tag}: knntools / GEMM bound", ours / bound, 1.5, higher_is_better=False))
        lines += ["", "## Targets (issue 15)", ""] + [f"- {t}" for t in targets]
    if hnsw_rows:
        k = hnsw_rows[0]["k"]
        lines += [
            "",
            f"## hnsw (M = {args.M}, ef_construction = {args.ef_construction}, ef = {hnsw_rows[0]['ef']}, k = {k}): knntools adapter vs raw hnswlib",
            "",
            f"| d | build wall s (ours / raw) | build overhead wall / CPU | queries/s wall (ours / raw) | query overhead wall / CPU | recall@{k} (ours / raw) |",
            "|---|---|---|---|---|---|",
        ]
    for r in hnsw_rows:
        bo, bc = r["hnsw_build_s"] / r["raw_build_s"] - 1, r["hnsw_build_cpu_s"] / r["raw_build_cpu_s"] - 1
        qo, qc = r["hnsw_query_s"] / r["raw_query_s"] - 1, r["hnsw_query_cpu_s"] / r["raw_query_cpu_s"] - 1
        lines.append(f"| {r['d']} | {r['hnsw_build_s']:.2f} / {r['raw_build_s']:.2f} | {bo:+.1%} / {bc:+.1%} | "
                     f"{nq / r['hnsw_query_s']:.0f} / {nq / r['raw_query_s']:.0f} | {qo:+.1%} / {qc:+.1%} | "
                     f"{r['hnsw_recall']:.4f} / {r['raw_recall']:.4f} |")
    if act is not None:
        k = args.k
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
    facts = machine_facts()
    dims = [int(s) for s in args.dims.split(",") if s.strip()]
    X784, Q784, what = load_data(args) if dims else (None, None, "none (--dims '')")
    rows: list[dict[str, Any]] = []
    peaks: dict[int, dict[str, float]] = {}
    hnsw_rows: list[dict[str, Any]] = []
    for d in dims:
        X, Q = project(X784, Q784, d, args.seed)
        peaks[d] = measure_peak(d, args.num_threads)
        print(f"d={d}: peak GEMM {peaks[d]}", file=sys.stderr, flush=True)
        rows += bench_exact(X, Q, args)
        if args.hnsw:
            from knntools.search import make_index

            exact_i = make_index("exact", device="cpu", num_threads=args.num_threads).fit(X).kneighbors(Q, args.k)[1]
            hnsw_rows.append(bench_dim(X, Q, args, exact_i))
            hnsw_rows[-1]["k"] = args.k
    act = bench_activations(args) if args.activations else None
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    text = report(args, what, rows, peaks, hnsw_rows, act, started, load, load_end, facts)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "a" if args.append else "w") as f:
            f.write(("\n" if args.append else "") + text)


if __name__ == "__main__":
    main()
