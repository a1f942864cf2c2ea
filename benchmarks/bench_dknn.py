"""Benchmark ``knntools dknn``: end-to-end time and peak memory beside the raw searches it performs.

For a pair of activation files (e.g. 60k Fashion-MNIST train / 10k test of the DkNN CNN):

1. **raw searches**: for every layer, the search ``dknn`` runs, done directly with the search
   layer and nothing else: ``make_index(backend, metric=<plan metric>).fit(<h5 layer, streamed>)``
   then ``kneighbors(<all test rows>, k)`` (the test layer read into memory first, not timed);
2. **end to end**: ``knntools dknn TRAIN TEST -k K --calibration N`` in a fresh process, wall time
   and peak resident memory (``ru_maxrss`` of the child, i.e. the whole command including its
   imports), plus the command's own timing breakdown from ``--json``.

The overhead of ``dknn`` over its searches (reading activations, Algorithm 1, writing the output
file and the plot) is the difference.

3. **FLOP bound** (issue 15): ``sum over layers of 2 * N * Q * d / peak_d``, where ``peak_d`` is the
   fastest float32 GEMM measured in this run at that layer's width (numpy's BLAS and torch, same
   threads; :func:`bench_search.measure_peak`). The end-to-end search time and the whole command
   are printed as ratios to it, with PASS / FALL SHORT against the target (search <= 1.5x).

Benchmark with the BLAS kernel a user gets (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``, as
for ``bench_search.py``). Run from the repository root::

    python benchmarks/bench_dknn.py /work/artifacts/fmnist/train.h5 /work/artifacts/fmnist/test.h5 \
        -o docs/results/dknn_bench.json
    python benchmarks/bench_dknn.py train.h5 test.h5 --layers conv2,conv3,logits --skip-raw   # e2e only

``--analyse PRED.h5 [PRED.h5 ...]`` instead recomputes, offline and without any search, the
accuracy and credibility of the p-value variants (smoothed / plain / reference's dropped zero
calibration scores) and the kNN-vote accuracy of layer subsets from a dknn output file::

    python benchmarks/bench_dknn.py --analyse /work/artifacts/dknn/dknn.h5

Single run each (the shared machine makes repeats expensive); report medians over separate
invocations if you need firmer numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# knntools before numpy, as the `knntools` command imports it (it sets OPENBLAS_THREAD_TIMEOUT
# before OpenBLAS loads), so the raw searches in this process run as the command's do.
import knntools  # noqa: E402,F401


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", nargs="?")
    ap.add_argument("test", nargs="?")
    ap.add_argument("--analyse", nargs="+", metavar="PRED.h5", help="offline analysis of dknn output files (no search)")
    ap.add_argument("-k", type=int, default=75)
    ap.add_argument("--calibration", type=int, default=750)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--backend", default="exact")
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--no-normalize", action="store_true")
    ap.add_argument("--num-threads", type=int, default=2)
    ap.add_argument("--skip-raw", action="store_true", help="only the end-to-end run")
    ap.add_argument("--skip-e2e", action="store_true", help="only the raw searches")
    ap.add_argument("--extra", default="", help="extra dknn flags, e.g. '--plot x.png'")
    ap.add_argument("--hnsw-reuse", metavar="DIR",
                    help="the hnsw case instead: build one index per layer once into DIR (`knntools index`, kept and "
                         "reused by later runs), time raw hnswlib knn_query on them, then `dknn --backend hnsw --index ...`")
    ap.add_argument("--query-repeat", type=int, default=2, help="raw hnswlib query timings per layer (minimum kept)")
    ap.add_argument("-o", "--output", help="write the results as JSON here")
    return ap.parse_args(argv)


def raw_searches(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from knntools.io.h5 import KFile
    from knntools.methods.dknn import search_plan
    from knntools.search import make_index

    torch.set_num_threads(args.num_threads)
    plan = search_plan(args.metric, not args.no_normalize, False)
    params = {"num_threads": args.num_threads} if args.backend == "hnsw" else {"device": "cpu", "num_threads": args.num_threads}
    out = {}
    with KFile(args.train, kind="activations") as tr, KFile(args.test, kind="activations") as te:
        for name in tr.resolve_layers(args.layers):
            Q = te.read_layer(name)
            t0 = time.perf_counter()
            index = make_index(args.backend, metric=plan.metric, **params).fit(tr.layer(name))
            t1 = time.perf_counter()
            index.kneighbors(Q, args.k)
            t2 = time.perf_counter()
            out[name] = {"dim": tr.layer_dim(name), "n_base": tr.n_samples, "n_query": len(Q), "fit_s": t1 - t0, "search_s": t2 - t1,
                         "total_s": t2 - t0}
            print(f"raw {name:>8s} d={out[name]['dim']:>6d}: fit {t1 - t0:7.2f} s  search {t2 - t1:7.2f} s", file=sys.stderr)
            del index, Q
    out["_total_s"] = sum(v["total_s"] for v in out.values() if isinstance(v, dict))
    out["_search_s"] = sum(v["search_s"] for v in out.values() if isinstance(v, dict) and "search_s" in v)
    out["_peak_rss_mb_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def hnsw_reuse(args: argparse.Namespace) -> dict:
    """Indexes built once, reused: raw hnswlib query time per layer, then dknn reading the same indexes.

    Each layer's index is ``DIR/<layer>.hnsw`` from ``knntools index TRAIN --layers L --backend hnsw
    --metric <the metric dknn searches>`` (built when missing; build time reported). The raw time is
    hnswlib's own ``knn_query`` of every test row (the rows dknn searches: calibration and evaluated
    rows together) with dknn's ``k`` and ``ef`` on ``--num-threads`` threads, on the index loaded from
    that file (best of ``--query-repeat``). Target: dknn's search time <= 1.2x their sum.
    """
    import numpy as np

    from knntools.io.h5 import KFile
    from knntools.methods.dknn import search_plan
    from knntools.search import load_index
    from knntools.search.hnsw import default_ef

    plan = search_plan(args.metric, not args.no_normalize, False)
    folder = Path(args.hnsw_reuse)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict = {"layers": {}, "metric_searched": plan.metric}
    with KFile(args.train, kind="activations") as tr, KFile(args.test, kind="activations") as te:
        layers = tr.resolve_layers(args.layers)
        for name in layers:
            path = folder / f"{name}.hnsw"
            build_s = None
            if not path.exists():
                cmd = [sys.executable, "-m", "knntools", "index", args.train, "--layers", name, "--backend", "hnsw",
                       "--metric", plan.metric, "--num-threads", str(args.num_threads), "-o", str(path), "-q"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                build_s = time.perf_counter() - t0
            index = load_index(path)
            raw = index._index  # the hnswlib.Index itself
            Q = np.ascontiguousarray(te.read_layer(name), dtype=np.float32)
            ef = default_ef(args.k)
            raw.set_ef(ef)
            best = float("inf")
            for _ in range(max(1, args.query_repeat)):
                t0 = time.perf_counter()
                raw.knn_query(Q, k=args.k, num_threads=args.num_threads)
                best = min(best, time.perf_counter() - t0)
            out["layers"][name] = {"dim": tr.layer_dim(name), "index": str(path), "build_s": build_s, "raw_query_s": best, "ef": ef}
            print(f"hnsw {name:>8s}: build {build_s if build_s is not None else 'reused'} raw query {best:.2f} s", file=sys.stderr)
            del index, raw, Q
    out["raw_query_s"] = sum(v["raw_query_s"] for v in out["layers"].values())
    extra = " ".join(f"--index {n}={v['index']}" for n, v in out["layers"].items())
    e2e_args = argparse.Namespace(**{**vars(args), "backend": "hnsw", "extra": f"{args.extra} {extra}".strip()})
    out["e2e"] = end_to_end(e2e_args)
    s = out["e2e"]["summary"]["timing_s"]["search"]
    r = s / out["raw_query_s"]
    out["target"] = (f"dknn with reused hnsw indexes: search {s:.2f} s / raw hnswlib queries {out['raw_query_s']:.2f} s = {r:.2f}x "
                     f"(target <= 1.2x) {'PASS' if r <= 1.2 else 'FALL SHORT'}")
    return out


def end_to_end(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(dir=Path(args.train).parent if os.access(Path(args.train).parent, os.W_OK) else None) as tmp:
        out_path = Path(tmp) / "dknn.h5"
        cmd = [sys.executable, "-m", "knntools", "dknn", args.train, args.test, "-k", str(args.k), "--calibration", str(args.calibration),
               "--layers", args.layers, "--backend", args.backend, "--metric", args.metric, "--num-threads", str(args.num_threads),
               "-o", str(out_path), "--json", *args.extra.split()]
        if args.no_normalize:
            cmd.append("--no-normalize")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.num_threads)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"dknn failed ({proc.returncode}): {proc.stderr}")
        summary = json.loads(proc.stdout)
        size = out_path.stat().st_size
    print(f"e2e: {wall:.1f} s wall, peak RSS {child.ru_maxrss / 1024:.0f} MB, search {summary['timing_s']['search']:.1f} s, "
          f"accuracy {summary['accuracy']:.4f} (DNN {summary['dnn_accuracy']})", file=sys.stderr)
    return {"command": " ".join(cmd[2:]), "wall_s": wall, "peak_rss_mb": child.ru_maxrss / 1024, "output_bytes": size, "summary": summary}


def flop_bound(args: argparse.Namespace) -> dict:
    """Per layer: 2 N Q d flops and the time they take at the fastest float32 GEMM measured now."""
    from bench_search import measure_peak

    from knntools.io.h5 import KFile

    out: dict = {"layers": {}}
    with KFile(args.train, kind="activations") as tr, KFile(args.test, kind="activations") as te:
        n, q = tr.n_samples, te.n_samples
        for name in tr.resolve_layers(args.layers):
            d = tr.layer_dim(name)
            pk = measure_peak(d, args.num_threads)
            flops = 2.0 * n * q * d
            out["layers"][name] = {"dim": d, "flops": flops, "peak_gflops": pk, "bound_s": flops / (pk["peak"] * 1e9)}
            print(f"bound {name:>8s} d={d:>6d}: {flops / 1e12:.2f} TFLOP at {pk['peak']:.0f} GFLOP/s -> {out['layers'][name]['bound_s']:.2f} s", file=sys.stderr)
    out["bound_s"] = sum(v["bound_s"] for v in out["layers"].values())
    out["tflop"] = sum(v["flops"] for v in out["layers"].values()) / 1e12
    return out


def verdicts(res: dict) -> list[str]:
    """Target lines: search time over the FLOP bound (<= 1.5x), and the whole command's ratio for reference."""
    b = res["bound"]["bound_s"]
    lines = []
    if "e2e" in res:
        s = res["e2e"]["summary"]["timing_s"]["search"]
        r = s / b
        lines.append(f"dknn end to end, search {s:.1f} s / FLOP bound {b:.1f} s = {r:.2f}x (target <= 1.5x) {'PASS' if r <= 1.5 else 'FALL SHORT'}")
        lines.append(f"dknn end to end, whole command {res['e2e']['wall_s']:.1f} s / FLOP bound = {res['e2e']['wall_s'] / b:.2f}x (reference)")
    if "raw" in res:
        r = res["raw"]["_search_s"] / b
        lines.append(f"raw searches {res['raw']['_search_s']:.1f} s / FLOP bound = {r:.2f}x (target <= 1.5x) {'PASS' if r <= 1.5 else 'FALL SHORT'}")
    return lines


def analyse(path: str) -> dict:
    """Quirk variants and layer-subset kNN votes from a dknn predictions file (no new search)."""
    import numpy as np

    from knntools.io.h5 import KFile
    from knntools.methods import dknn as dk

    with KFile(path, kind="predictions") as kf:
        y = kf.read("labels")
        layers = kf.attrs["params"]["layers"]
        neigh = {n: kf.read(f"neighbors/{n}/labels") for n in layers}
        cal = kf.f["calibration/scores"][()]
        dnn = kf.read("dnn_predictions") if kf.has("dnn_predictions") else None
        alpha = kf.read("nonconformity")
    out: dict = {"file": path, "n": len(y), "frac_cal_zero": float((cal == 0).mean()),
                 "cal_quantiles_10_25_50_75_90": np.quantile(cal, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist()}
    for name, smoothed, drop in (("smoothed", True, False), ("plain", False, False), ("plain+drop_zero (reference)", False, True)):
        A = cal[cal != 0] if drop else cal
        pred, _, cred = dk.predict_from_p_values(dk.p_values(alpha, A, smoothed=smoothed), alpha)
        ok = pred == y
        out[name] = {"accuracy": float(ok.mean()), "mean_credibility": float(cred.mean()), "cred_correct": float(cred[ok].mean()),
                     "cred_wrong": float(cred[~ok].mean()) if (~ok).any() else None, "|A|": int(len(A))}
    subsets = [[n] for n in layers] + [layers[i:] for i in range(1, len(layers) - 1)]
    for sub in subsets:
        a = dk.nonconformity([neigh[s] for s in sub], alpha.shape[1])
        out[f"knn_vote_accuracy {'+'.join(sub)}"] = float((np.argmin(a, axis=1) == y).mean())
    if dnn is not None:
        out["dnn_accuracy"] = float((dnn == y).mean())
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.analyse:
        print(json.dumps([analyse(p) for p in args.analyse], indent=1))
        return
    if not (args.train and args.test):
        raise SystemExit("bench_dknn.py: TRAIN and TEST are required (or --analyse PRED.h5)")
    res: dict = {"train": args.train, "test": args.test, "k": args.k, "backend": args.backend, "metric": args.metric,
                 "normalize": not args.no_normalize, "num_threads": args.num_threads, "cpu_count": os.cpu_count(),
                 "loadavg_start": os.getloadavg()}
    if args.hnsw_reuse:
        res["hnsw_reuse"] = hnsw_reuse(args)
    else:
        if not args.skip_raw:
            res["raw"] = raw_searches(args)
        res["bound"] = flop_bound(args)
        if not args.skip_e2e:
            res["e2e"] = end_to_end(args)
    res["loadavg_end"] = os.getloadavg()
    res["targets"] = [res["hnsw_reuse"]["target"]] if args.hnsw_reuse else verdicts(res)
    for line in res["targets"]:
        print(line, file=sys.stderr)
    text = json.dumps(res, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
