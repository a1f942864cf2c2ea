"""seq2knn against the paper (Xu & Klabjan): V2VSLS vs kNN on every tabular set, and the paper
defaults vs the former options on churn and caravan.

    PYTHONPATH=. python benchmarks/bench_seq2knn_paper.py vs-knn  --epochs 15 --seeds 0 1 2 3 4 -o docs/results/seq2knn/vs_knn.csv
    PYTHONPATH=. python benchmarks/bench_seq2knn_paper.py old-new --epochs 15 --seeds 0 -o docs/results/seq2knn/old_new.csv

Every row of the CSV is one (data, model, mode, options, seed) run: test macro F1 and accuracy of
the model and of plain kNN (K = 5, exact, on the same training rows), the best validation epoch and
the wall time. The pipeline is the one of ``knntools seq2knn`` (same calls, in one process to save
the interpreter start-up): the data set's fixed stratified 75/25 train/test split
(:func:`knntools.io.datasets.load_dataset`), 10 % of the training rows held out (stratified, seeded)
to pick the epoch with the best validation macro F1, features standardised with the remaining
training rows' mean and std, K = 5, tau = 0.85, lam = 0.12, alpha = 9.5, Adam lr 0.01, dropout 0.2,
mini-batch 64, memory 64, out-of-core R = 50, B = 64. A seed changes the validation rows, the
initialisation, dropout, memories and out-of-core batches (the test split is fixed; the paper
re-splits 80/10/10 per seed).

``old-new`` runs each changed configuration twice: ``new`` = today's defaults (the paper's), ``old``
= the former defaults through their flags (``--label-bank 4096 --memory-labels --attention-scale
--memory-draws 5 --exclude-query``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import numpy as np

TABULAR = ("iris", "wine", "breast-cancer", "digits", "churn", "caravan")
OLD = {"label_bank": 4096, "memory_labels": True, "attention_scale": True, "memory_draws": 5, "include_query": False}
NEW = {"label_bank": 0, "memory_labels": False, "attention_scale": False, "memory_draws": 1, "include_query": True}
#: (model, mode) whose result depends on the changed defaults
CHANGED = (("v2vs", "full"), ("mnknn", "full"), ("mnknn-vec", "full"), ("v2vsls", "ooc"), ("v2vs", "ooc"))
FIELDS = ["data", "model", "mode", "options", "seed", "epochs", "n_train", "n_val", "n_test", "n_features", "n_classes",
          "macro_f1", "accuracy", "knn_macro_f1", "knn_accuracy", "best_epoch", "val_f1", "seconds"]


def run_one(data: str, model: str, mode: str, opts: dict, seed: int, epochs: int, cache: dict) -> dict:
    import torch
    from sklearn.model_selection import train_test_split

    from knntools.io.datasets import load_dataset
    from knntools.methods import seq2knn as s2k

    if data not in cache:
        tr, te = load_dataset(data, split="train"), load_dataset(data, split="test")
        cache[data] = (tr.X.reshape(len(tr.y), -1).astype(np.float32), tr.y.astype(np.int64), te.X.reshape(len(te.y), -1).astype(np.float32),
                       te.y.astype(np.int64), max(len(tr.classes), int(tr.y.max()) + 1))
    X_raw, y, Xt_raw, yt, C = cache[data]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(y))
    counts = np.bincount(y, minlength=C)
    strat = y if counts[counts > 0].min() >= 2 else None
    tr_rows, va_rows = train_test_split(rows, test_size=max(1, int(round(0.1 * len(y)))), stratify=strat, random_state=seed)
    tr_rows, va_rows = np.sort(tr_rows), np.sort(va_rows)
    scaler = s2k.Standardizer(*s2k.stream_moments(X_raw, tr_rows))
    X, Xt = scaler(X_raw), scaler(Xt_raw)
    t0 = time.perf_counter()
    K = 5
    if mode == "ooc":
        _, nb = s2k.out_of_core_neighbors(X, K, batches=50, batch_size=64, pool=tr_rows, random_state=rng, include_query=opts["include_query"])
    else:
        _, pos = s2k.full_neighbors(X[tr_rows], K)
        nb = tr_rows[pos]
    res = s2k.train_model(model, X, y, C, neighbors=nb, train_rows=tr_rows, val=(X[va_rows], y[va_rows]), K=K, epochs=epochs,
                          label_bank=opts["label_bank"], memory_labels=opts["memory_labels"], attention_scale=opts["attention_scale"],
                          memory_draws=opts["memory_draws"], random_state=rng)
    p = s2k.predict(res.model, Xt, name=model, memory=res.bank, memory_draws=opts["memory_draws"], reference=res.reference, random_state=seed)
    pk = s2k.knn_predict(X[tr_rows], y[tr_rows], Xt, C, K)
    return {"n_train": len(tr_rows), "n_val": len(va_rows), "n_test": len(yt), "n_features": X.shape[1], "n_classes": C,
            "macro_f1": round(s2k.macro_f1(yt, p["predictions"], C), 5), "accuracy": round(float((p["predictions"] == yt).mean()), 5),
            "knn_macro_f1": round(s2k.macro_f1(yt, pk, C), 5), "knn_accuracy": round(float((pk == yt).mean()), 5),
            "best_epoch": res.best_epoch, "val_f1": round(res.best_val_f1, 5), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["vs-knn", "old-new"])
    ap.add_argument("--data", nargs="*", default=None, help=f"default: {' '.join(TABULAR)} (vs-knn) or churn caravan (old-new)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--only", nargs="*", default=None, metavar="MODEL:MODE", help="old-new: only these configurations (e.g. mnknn:full)")
    ap.add_argument("-o", "--output", required=True, help="CSV (rows appended as runs finish; finished runs are skipped on a re-run)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    data = a.data or (list(TABULAR) if a.part == "vs-knn" else ["churn", "caravan"])
    jobs = []
    for d in data:
        for seed in a.seeds:
            if a.part == "vs-knn":
                jobs.append((d, "v2vsls", "full", "new", seed))
            else:
                for model, mode in CHANGED:
                    if a.only and f"{model}:{mode}" not in a.only:
                        continue
                    jobs += [(d, model, mode, "old", seed), (d, model, mode, "new", seed)]
    done = set()
    if os.path.exists(a.output):
        with open(a.output) as f:
            done = {(r["data"], r["model"], r["mode"], r["options"], int(r["seed"])) for r in csv.DictReader(f)}
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    new_file = not os.path.exists(a.output)
    cache: dict = {}
    with open(a.output, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new_file:
            w.writeheader()
        for d, model, mode, tag, seed in jobs:
            if (d, model, mode, tag, seed) in done:
                continue
            r = run_one(d, model, mode, OLD if tag == "old" else NEW, seed, a.epochs, cache)
            row = {"data": d, "model": model, "mode": mode, "options": tag, "seed": seed, "epochs": a.epochs, **r}
            w.writerow(row)
            f.flush()
            print(" ".join(f"{k}={row[k]}" for k in ("data", "model", "mode", "options", "seed", "macro_f1", "knn_macro_f1", "seconds")), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
