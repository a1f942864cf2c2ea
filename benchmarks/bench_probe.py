"""Benchmark ``knntools probe`` end to end against the GEMM bound of its k-NN searches (issue 15).

``probe TRAIN.h5 TEST.h5 --layers all --classifiers knn,svm,lr`` fits one exact index per layer and
searches it twice: the training split against itself (``--loo``: each own row excluded; default: the
paper's plain k-NN) and the test split against the training split. Its arithmetic is
``2 · N · (N + Q) · d`` per layer (N training rows, Q test rows, d the layer width). The bound is
that over ``peak``, the fastest float32 GEMM measured in the same run at the layer's width with the
same threads (``bench_search.measure_peak``: numpy's BLAS and torch). The benchmark reads the
command's own per-stage timing (``--json`` ``timing_s``) and prints, per layer and in total, the k-NN
search time, the bound, their ratio with PASS / FALL SHORT at ≤ 1.5×, and the SVM / LR fit times.

Data: ``--train/--test`` activation files (e.g. the Fashion-MNIST DkNN CNN from ``knntools train``
+ ``knntools embed``), or by default a synthetic stand-in (Gaussian class blobs at several layer
widths, logits from the last one) written to a temporary folder. Run from the repository root::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_probe.py --quick -o benchmarks/results/probe.md
    python benchmarks/bench_probe.py --train train.h5 --test test.h5 --loo
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import measure_peak  # noqa: E402  (the same peak measurement as the search benchmark)

GOAL = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, help="training activation file (default: synthetic stand-in)")
    p.add_argument("--test", type=Path, help="test activation file (with --train)")
    p.add_argument("--n-train", type=int, default=20000, help="synthetic training rows (default 20000)")
    p.add_argument("--n-test", type=int, default=5000, help="synthetic test rows (default 5000)")
    p.add_argument("--dims", default="1024,512,128,10", help="synthetic layer widths (default 1024,512,128,10)")
    p.add_argument("--quick", action="store_true", help="synthetic 8000 train / 2000 test rows, widths 512,256,64,10")
    p.add_argument("--loo", action="store_true", help="pass --loo (leave-one-out train vote)")
    p.add_argument("-k", type=int, default=30)
    p.add_argument("--num-threads", type=int, default=os.cpu_count(), help="threads of probe and of the peak GEMM (default all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, help="write the markdown report here (also printed)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.dims = 8000, 2000, "512,256,64,10"
    if (args.train is None) != (args.test is None):
        p.error("--train and --test go together")
    return args


def synthetic(folder: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Write a train/test pair of synthetic activation files: 10 Gaussian class blobs per layer."""
    from knntools.io.kinds import write_activations

    dims = [int(s) for s in args.dims.split(",")]
    C = 10
    rng = np.random.default_rng(args.seed)
    centers = [rng.standard_normal((C, d)).astype(np.float32) for d in dims]
    paths = []
    for split, n in (("train", args.n_train), ("test", args.n_test)):
        y = rng.integers(0, C, n)
        layers = {f"layer{i + 1}": (centers[i][y] + 1.5 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
                  for i, d in enumerate(dims)}
        last = layers[f"layer{len(dims)}"]
        logits = (-((last[:, None, :] - centers[-1][None]) ** 2).sum(-1) / 10.0).astype(np.float32)
        path = folder / f"{split}.h5"
        write_activations(path, layers=layers, logits=logits, labels=y, ids=np.arange(n), classes=[str(c) for c in range(C)],
                          attrs={"dataset": "synthetic blobs", "split": split, "model_uuid": "bench-probe"})
        paths.append(path)
    return paths[0], paths[1]


def run_probe(train: Path, test: Path, out: Path, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """Run the command once (its own process, as a user would) and return its --json summary and the wall time."""
    import time

    cmd = [sys.executable, "-m", "knntools", "probe", str(train), str(test), "--layers", "all", "--classifiers", "knn,svm,lr",
           "-k", str(args.k), "--loo" if args.loo else "--no-loo", "--num-threads", str(args.num_threads), "-o", str(out), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"probe failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads([line for line in proc.stdout.splitlines() if line.strip()][-1]), wall


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_probe_") as tmp:
        if args.train is None:
            train, test = synthetic(Path(tmp), args)
            data = f"synthetic Gaussian blobs, {args.n_train} train / {args.n_test} test rows, widths {args.dims}"
        else:
            train, test, data = args.train, args.test, f"{args.train} / {args.test}"
        res, wall = run_probe(train, test, Path(tmp) / "probe.h5", args)
    per = res["timing_s"]["per_layer"]
    peaks: dict[int, dict[str, float]] = {}
    lines = []
    tot_search = tot_bound = 0.0
    for r in per:
        d = int(r["dim"])
        if d not in peaks:
            peaks[d] = measure_peak(d, args.num_threads)
        info = next(i for i in res["layers_info"] if i["layer"] == r["layer"])
        N, Q = info["n_train"], info["n_test"]
        flop = 2.0 * N * (N + Q) * d
        bound = flop / (peaks[d]["peak"] * 1e9)
        search = r["knn_train_s"] + r["knn_test_s"]
        tot_search += search
        tot_bound += bound
        lines.append(f"| {r['layer']} | {d} | {r['read_s']:.2f} | {r['knn_train_s']:.2f} | {r['knn_test_s']:.2f} | {bound:.2f} | "
                     f"{peaks[d]['numpy']:.0f} / {peaks[d]['torch']:.0f} | {search / bound:.2f}× | {r['svm_fit_s']:.2f} | {r['lr_fit_s']:.2f} | {r['metrics_s']:.2f} |")
    ratio = tot_search / tot_bound
    verdict = "PASS" if ratio <= GOAL else "FALL SHORT"
    t = res["timing_s"]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    report = "\n".join([
        "# probe: k-NN searches against the GEMM bound",
        "",
        f"- command: `{' '.join(['python', 'benchmarks/bench_probe.py', *(argv if argv is not None else sys.argv[1:])])}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- load (`uptime`): {uptime}",
        f"- CPU (`lscpu | grep 'Model name'`): {cpu.split(':', 1)[-1].strip()}",
        f"- data: {data}; `probe --layers all --classifiers knn,svm,lr -k {args.k} {'--loo' if args.loo else '--no-loo'} --num-threads {args.num_threads}`",
        f"- bound per layer = 2·N·(N+Q)·d / peak, peak = fastest fp32 GEMM at that d on {args.num_threads} threads measured in this run (numpy / torch GFLOP/s)",
        "",
        "| layer | d | read s | kNN train s | kNN test s | bound s | GEMM GFLOP/s numpy / torch | search / bound | SVM fit s | LR fit s | metrics s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        f"- **k-NN search total {tot_search:.2f} s vs bound {tot_bound:.2f} s: {ratio:.2f}× (goal ≤ {GOAL}×) — {verdict}**",
        f"- setup (loading the search engine, torch, before the first layer) {t.get('setup', 0.0):.2f} s, outside the layers' stages",
        f"- SVM fit {t['svm_fit']:.2f} s, LR fit {t['lr_fit']:.2f} s, read {t['read']:.2f} s, metrics {t['metrics']:.2f} s; "
        f"probe's own total {t['total']:.2f} s, process wall {wall:.2f} s (includes imports)",
        "",
    ])
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)


if __name__ == "__main__":
    main()
