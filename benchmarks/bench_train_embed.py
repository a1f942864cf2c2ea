"""Benchmark `knntools train` / `embed` against a plain PyTorch loop on the same model, in the same run.

Measures, on Fashion-MNIST (or digits with ``--dataset digits``):

1. training throughput (images/s) of :func:`knntools.models.training.train_model` against a minimal
   PyTorch loop (preloaded tensors, ``randperm`` batches, Adam, cross-entropy) on the same
   architecture, data and batch size; both one epoch over ``--n-train`` rows, alternated ``--repeats``
   times (medians reported, machine is shared);
2. embedding throughput (images/s): :func:`knntools.models.features.iter_activations` streaming every
   layer into an HDF5 file through :func:`knntools.io.h5.create_stream` (the `embed` path) against a
   plain forward-hook loop that only copies the activations to numpy (no file);
3. optionally (``--peak-memory MODEL.pt``) the peak resident memory of the real CLI
   ``knntools embed MODEL.pt --split train --layers all`` on the whole split, measured with
   ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of the child process, beside the size of the
   file it wrote (streaming keeps memory far below the output size: dknn-cnn's conv1 alone is
   12,544-d, 60k rows = 3 GB float32).

Usage::

    python benchmarks/bench_train_embed.py --n-train 10000 --n-embed 10000 --repeats 3 --json
    python benchmarks/bench_train_embed.py --peak-memory /work/artifacts/fmnist/model.pt --skip-throughput
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def plain_train_epoch(model, X, y, batch_size, lr, seed):
    """The reference loop: what a user would write by hand."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X), generator=g)
    model.train()
    t0 = time.perf_counter()
    for s in range(0, len(X), batch_size):
        idx = perm[s : s + batch_size]
        loss = F.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def plain_embed(model, X, names, batch_size):
    import torch

    store = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o)) for n in names]
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            logits = model(X[s : s + batch_size])
            _ = [store[n].flatten(1).numpy() for n in names], logits.numpy()
    for h in hooks:
        h.remove()
    return time.perf_counter() - t0


def knntools_embed(net, X, names, batch_size, folder):
    import numpy as np

    from knntools.io.h5 import create, create_stream
    from knntools.models.features import describe_layers, iter_activations

    rows = describe_layers(net, names)
    t0 = time.perf_counter()
    with create(Path(folder) / "bench.h5", "activations", force=True) as f:
        streams = {r["name"]: create_stream(f, f"layers/{r['name']}", (len(X), r["dim"]), np.float32) for r in rows[:-1]}
        lg = create_stream(f, "logits", (len(X), rows[-1]["dim"]), np.float32)
        for start, feats, logits in iter_activations(net, X, names, batch_size=batch_size):
            for n, block in feats.items():
                streams[n][start : start + len(block)] = block
            lg[start : start + len(logits)] = logits
    elapsed = time.perf_counter() - t0
    os.remove(Path(folder) / "bench.h5")
    return elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--arch", default="dknn-cnn")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-embed", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--embed-batch-size", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--peak-memory", default=None, help="a checkpoint: measure `knntools embed` peak RSS on its whole training split")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from knntools.io.datasets import load_dataset
    from knntools.models.features import Network
    from knntools.models.registry import build_model
    from knntools.models.training import Normalizer, TrainConfig, normalization_stats, train_model

    torch.set_num_threads(args.threads)
    res: dict = {"dataset": args.dataset, "arch": args.arch, "threads": args.threads, "batch_size": args.batch_size}
    if not args.skip_throughput:
        ds = load_dataset(args.dataset, split="train", data_dir=args.data_dir)
        X, y = ds.X[: args.n_train], ds.y[: args.n_train]
        norm = normalization_stats(X)
        Xn = Normalizer(norm)(torch.from_numpy(X))  # the plain loop gets pre-normalised data (its best case)
        yt = torch.from_numpy(y)
        kt, pt = [], []
        for r in range(args.repeats):
            torch.manual_seed(r)
            m = build_model(args.arch, ds.input_shape, ds.n_classes)
            t0 = time.perf_counter()
            train_model(m, X, y, TrainConfig(epochs=1, batch_size=args.batch_size, seed=r), normalization=norm)
            kt.append(time.perf_counter() - t0)
            torch.manual_seed(r)
            m = build_model(args.arch, ds.input_shape, ds.n_classes)
            pt.append(plain_train_epoch(m, Xn, yt, args.batch_size, 1e-3, r))
        res["train"] = {"n_images": len(X), "knntools_s": kt, "plain_s": pt,
                        "knntools_images_per_s": len(X) / statistics.median(kt), "plain_images_per_s": len(X) / statistics.median(pt)}
        Xe = ds.X[: args.n_embed]
        m = build_model(args.arch, ds.input_shape, ds.n_classes).eval()
        net = Network(m, "knntools", args.arch, ds.input_shape, ds.classes, norm, layers=list(m.knn_layers), penultimate=m.knn_penultimate)
        Xen = Normalizer(norm)(torch.from_numpy(Xe))
        ke, pe = [], []
        with tempfile.TemporaryDirectory(dir=".") as tmp:
            for _ in range(args.repeats):
                ke.append(knntools_embed(net, Xe, list(m.knn_layers), args.embed_batch_size, tmp))
                pe.append(plain_embed(m, Xen, list(m.knn_layers), args.embed_batch_size))
        res["embed"] = {"n_images": len(Xe), "layers": list(m.knn_layers), "knntools_s": ke, "plain_s": pe,
                        "knntools_images_per_s": len(Xe) / statistics.median(ke), "plain_images_per_s": len(Xe) / statistics.median(pe),
                        "note": "knntools writes every layer to HDF5; the plain loop only copies to numpy"}
    if args.peak_memory:
        with tempfile.TemporaryDirectory(dir=".") as tmp:
            out = Path(tmp) / "train.h5"
            cmd = [sys.executable, "-m", "knntools", "embed", args.peak_memory, "--split", "train", "--layers", "all", "-o", str(out),
                   "--num-threads", str(args.threads), "--json", "-q"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            summary = json.loads(proc.stdout)
            peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            res["embed_peak_memory"] = {"command": " ".join(cmd[1:]), "n_samples": summary["n_samples"], "file_bytes": out.stat().st_size,
                                        "peak_rss_bytes": peak_kib * 1024, "wall_s": wall, "images_per_s": summary["images_per_s"],
                                        "accuracy": summary["accuracy"]}
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
