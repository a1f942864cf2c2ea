"""One-GPU check of the CUDA paths (issue 15): train with and without --amp, embed, exact search, dknn.

Run through ``benchmarks/gpu_check.sh FMNIST_DIR [OUT_DIR]`` (which sets PYTHONPATH); every step
runs the ``knntools`` command in this process, so the peak GPU memory of each step is measured
(``torch.cuda.max_memory_allocated``, reset before the step). Steps, about 3-4 minutes on one
H100/H200-class GPU with 16 CPU cores:

1. ``train`` the DkNN CNN on Fashion-MNIST: on CPU (the accuracy reference), on CUDA in float32
   (``--no-amp``) and on CUDA with ``--amp``; same seed, same epochs;
2. ``embed`` the train and test splits (all layers) with the CUDA float32 model, on CUDA;
3. exact search on CUDA of the test rows against the train rows on every layer, float32, bfloat16
   and float16 (``--precision``): time, queries/s, peak memory, certified queries, and the
   neighbour sets against CPU float32 exact search on 500 sampled queries (must be identical);
4. ``dknn`` on CUDA and on CPU on the same activation files: accuracy must be identical.

Writes ``OUT_DIR/gpu_check.md`` (one markdown table plus the PASS/FAIL checks) and
``OUT_DIR/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def knntools(argv: list[str]) -> dict[str, Any]:
    """Run ``knntools ARGV --json`` in this process; return its JSON summary (raise on failure)."""
    from knntools.cli import main

    buf = io.StringIO()
    print("+ knntools " + " ".join(argv), file=sys.stderr, flush=True)
    with contextlib.redirect_stdout(buf):
        try:
            main([*argv, "--json", "--force"])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    if code:
        raise SystemExit(f"knntools {' '.join(argv)} failed with exit code {code}")
    text = buf.getvalue().strip().splitlines()
    return json.loads(text[-1]) if text else {}


def step(rows: list[dict[str, Any]], name: str, device: str, precision: str, fn: Any) -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and device.startswith("cuda") else None
    row = {"step": name, "device": device, "precision": precision, "wall_s": wall, "peak_gpu_mib": peak, **res}
    rows.append(row)
    print(f"  {name} on {device} ({precision}): {wall:.1f} s" + (f", peak {peak:.0f} MiB" if peak is not None else ""), file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path, help="folder with the Fashion-MNIST IDX files")
    ap.add_argument("out", type=Path, nargs="?", default=Path("gpu_check_out"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--k", type=int, default=75)
    ap.add_argument("--sample", type=int, default=500, help="queries compared with CPU exact search")
    args = ap.parse_args()

    import numpy as np
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible to torch; run it on the GPU machine")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = ["--dataset", "fashion-mnist", "--data-dir", str(args.data_dir)]
    train = ["train", *data, "--arch", "dknn-cnn", "--epochs", str(args.epochs), "--optimizer", "adam", "--lr", "1e-3", "--seed", "0"]
    rows: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    # 1. training: CPU reference, CUDA float32, CUDA AMP
    def train_on(device: str, amp: bool, path: Path) -> dict[str, Any]:
        r = knntools([*train, "--device", device, "--amp" if amp else "--no-amp", "-o", str(path)])
        return {"throughput": r.get("train_images_per_s"), "unit": "images/s", "accuracy": r.get("test_acc")}

    cpu = step(rows, "train", "cpu", "float32", lambda: train_on("cpu", False, out / "model_cpu.pt"))
    f32 = step(rows, "train", "cuda", "float32", lambda: train_on("cuda", False, out / "model_cuda.pt"))
    amp = step(rows, "train", "cuda", "amp", lambda: train_on("cuda", True, out / "model_amp.pt"))

    # 2. embeddings on CUDA
    def embed(split: str) -> dict[str, Any]:
        r = knntools(["embed", str(out / "model_cuda.pt"), *data, "--split", split, "--layers", "all", "--device", "cuda", "-o", str(out / f"{split}.h5")])
        return {"throughput": r.get("images_per_s"), "unit": "images/s", "accuracy": r.get("accuracy")}

    step(rows, "embed train", "cuda", "float32", lambda: embed("train"))
    step(rows, "embed test", "cuda", "float32", lambda: embed("test"))

    # 3. exact search on CUDA, every layer, every precision; neighbour sets vs CPU float32 on a sample
    from knntools.io.h5 import KFile
    from knntools.search import make_index

    checks: list[tuple[str, bool]] = []
    with KFile(out / "train.h5", kind="activations") as tr, KFile(out / "test.h5", kind="activations") as te:
        layers = tr.resolve_layers("all")
        X = {n: tr.read_layer(n) for n in layers}
        Q = {n: te.read_layer(n) for n in layers}
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(next(iter(Q.values()))), size=min(args.sample, len(next(iter(Q.values())))), replace=False))
    cpu_ref = {n: make_index("exact", device="cpu").fit(X[n]).kneighbors(Q[n][sample], args.k)[1] for n in layers}
    for prec in ("float32", "bfloat16", "float16"):
        def search(prec: str = prec) -> dict[str, Any]:
            stats, agree, nq = {}, True, 0
            for n in layers:
                index = make_index("exact", device="cuda", precision=prec).fit(X[n])
                _, idx = index.kneighbors(Q[n], args.k)
                nq += len(Q[n])
                agree &= all(set(a) == set(b) for a, b in zip(idx[sample], cpu_ref[n]))
                if prec != "float32":
                    stats[n] = f"{index.last_stats_['certified']}/{index.last_stats_['queries']}"
            return {"throughput": nq / 1.0, "unit": "layer-queries", "same_neighbours_as_cpu": agree, "certified": stats}
        r = step(rows, f"exact search k={args.k}, {len(layers)} layers", "cuda", prec, search)
        r["throughput"] = r["throughput"] / r["wall_s"]
        r["unit"] = "queries/s (all layers)"
        checks.append((f"exact search {prec} on CUDA returns the CPU float32 neighbour sets ({len(sample)} queries x {len(layers)} layers)",
                       bool(r["same_neighbours_as_cpu"])))

    # 4. dknn, CUDA vs CPU, same files
    def dknn(device: str) -> dict[str, Any]:
        r = knntools(["dknn", str(out / "train.h5"), str(out / "test.h5"), "-k", str(args.k), "--calibration", "750", "--device", device,
                      "-o", str(out / f"dknn_{device}.h5")])
        return {"throughput": r.get("n_evaluated", 0) / max(r["timing_s"]["total"], 1e-9), "unit": "test images/s", "accuracy": r.get("accuracy"),
                "search_s": r["timing_s"]["search"]}

    d_gpu = step(rows, "dknn (all layers, exact)", "cuda", "float32", lambda: dknn("cuda"))
    d_cpu = step(rows, "dknn (all layers, exact)", "cpu", "float32", lambda: dknn("cpu"))

    # checks
    for name, r in (("CUDA float32", f32), ("CUDA AMP", amp)):
        diff = abs(r["accuracy"] - cpu["accuracy"]) * 100
        checks.append((f"train {name}: test accuracy {r['accuracy']:.4f} vs CPU {cpu['accuracy']:.4f} ({diff:.2f} points; within 0.5)", diff <= 0.5))
    checks.append((f"dknn CUDA accuracy {d_gpu['accuracy']:.4f} equals CPU {d_cpu['accuracy']:.4f}", d_gpu["accuracy"] == d_cpu["accuracy"]))

    dev = torch.cuda.get_device_name(0)
    lines = [
        "# GPU check",
        "",
        f"`benchmarks/gpu_check.sh {args.data_dir} {out}` (epochs {args.epochs}, k {args.k}) — {started}; {dev}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores, {platform.python_version()}.",
        "",
        "| step | device | precision | wall s | throughput | peak GPU MiB | accuracy | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        thr = f"{r['throughput']:.0f} {r['unit']}" if r.get("throughput") else "–"
        peak = f"{r['peak_gpu_mib']:.0f}" if r.get("peak_gpu_mib") is not None else "–"
        acc = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "–"
        notes = []
        if r.get("certified"):
            notes.append("certified " + ", ".join(f"{k} {v}" for k, v in r["certified"].items()))
        if "same_neighbours_as_cpu" in r:
            notes.append(f"same neighbours as CPU: {r['same_neighbours_as_cpu']}")
        if "search_s" in r:
            notes.append(f"search {r['search_s']:.1f} s")
        lines.append(f"| {r['step']} | {r['device']} | {r['precision']} | {r['wall_s']:.1f} | {thr} | {peak} | {acc} | {'; '.join(notes)} |")
    lines += ["", "## Checks", ""] + [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps({"rows": rows, "checks": checks}, indent=1, default=str) + "\n")
    print(text)
    if not all(ok for _, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
