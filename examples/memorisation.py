#!/usr/bin/env python3
"""The memorisation study: do the papers' large effects appear once a network memorises noisy labels?

A LeNet is trained on a stratified Fashion-MNIST subset until it fits its *noisy* training labels
(training accuracy on them above 95 %), under

- permuted labels, 0 / 8 / 16 / 32 / 48 % (LaSeNN §3.4: a random fraction of the samples have their
  labels permuted among themselves),
- random-asymmetric noise, 20 / 30 / 40 % (kNet: each class flips to one random other class),
- random labels, 100 % (Cohen, Giryes & Sapiro §4, after Zhang et al.),

and every method runs on the final network: DNN, kNN (k chosen on validation rows, and the best k
on the test set as an oracle), 1-NN, DkNN, LaSeNN (w_q chosen on validation rows from one search),
kNet (k chosen on validation rows), and probe's per-layer kNN train/test accuracy and P_SAME. Probe
also runs on step checkpoints taken over training: the over-fitting curve.

Everything goes through the knntools command line, step by step (each setting's steps run in one
worker process through ``knntools.cli.main``, the console script's entry point; ``--subprocess`` runs
each as its own ``knntools`` process), with each command's ``--json`` summary kept beside its output; the table and figures are gathered from those summaries. Re-runs
continue by provenance, like ``examples/compare.py``: a step whose outputs are current is reused.

Usage (from the repository root, with knntools installed)::

    python examples/memorisation.py --data-dir /usr/share/datasets/fashion-mnist --out runs/memorisation
    python examples/memorisation.py --toy --data-dir /usr/share/datasets/fashion-mnist --out /tmp/mem   # CI size

Outputs in ``--out``: ``results.md`` / ``results.csv`` (one row per setting), ``layers.csv`` (per-layer
probe rows), ``curves.csv`` (probe over training steps) and four figures: ``accuracy_vs_noise.png``,
``gain_vs_noise.png`` (LaSeNN's figure), ``layers_random_labels.png`` (Cohen's Fig. 4) and
``p_same_over_training.png``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import struct
import sys
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Runner  # noqa: E402  (the provenance-aware step runner, shared with the comparison)

#: name -> (noise kind, rate); None = the clean labels.
SETTINGS: dict[str, tuple[str, float] | None] = {
    "clean": None,
    "permute08": ("permute", 0.08),
    "permute16": ("permute", 0.16),
    "permute32": ("permute", 0.32),
    "permute48": ("permute", 0.48),
    "asym20": ("asymmetric-random", 0.2),
    "asym30": ("asymmetric-random", 0.3),
    "asym40": ("asymmetric-random", 0.4),
    "random": ("random", 1.0),
}
FAMILIES = {"permute": ["clean", "permute08", "permute16", "permute32", "permute48"],
            "asymmetric-random": ["clean", "asym20", "asym30", "asym40"]}


# ------------------------------------------------------------------------------------------
# The data: a stratified subset written as IDX files, so every command reads it as fashion-mnist
# ------------------------------------------------------------------------------------------


def _write_idx(path: Path, arr: Any) -> None:
    import numpy as np

    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = 0x0800 | arr.ndim
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in arr.shape))
        fh.write(arr.tobytes())


def stratified(y: Any, n: int, seed: int) -> Any:
    """``n`` row indices, ``n // C`` per class (the first ones of a seeded shuffle), in shuffled order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n // len(classes)
    rows = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes])
    return rng.permutation(rows)


def make_subset(src: Path, dest: Path, n_train: int, n_test: int, seed: int) -> dict[str, Any]:
    """Write a stratified subset of the Fashion-MNIST IDX files in ``src`` to ``dest`` (once)."""
    from knntools.io.datasets import find_idx_files, read_idx

    meta = {"source": str(src.resolve()), "n_train": n_train, "n_test": n_test, "seed": seed}
    stamp = dest / "subset.json"
    if stamp.exists():
        old = json.loads(stamp.read_text())
        if old != meta:
            raise SystemExit(f"memorisation: {dest} holds another subset ({old}); use another --out or delete it")
        return meta
    dest.mkdir(parents=True, exist_ok=True)
    for split, prefix, n, salt in (("train", "train", n_train, 1), ("test", "t10k", n_test, 2)):
        found = find_idx_files("fashion-mnist", split, src)
        if found is None:
            raise SystemExit(f"memorisation: --data-dir {src}: the Fashion-MNIST {split} IDX files were not found "
                             f"(apt-get install dataset-fashion-mnist, or torchvision's FashionMNIST download)")
        img, lab = read_idx(found[0]), read_idx(found[1])
        rows = stratified(lab, n, seed * 1000 + salt)
        _write_idx(dest / f"{prefix}-images-idx3-ubyte.gz", img[rows])
        _write_idx(dest / f"{prefix}-labels-idx1-ubyte.gz", lab[rows])
    stamp.write_text(json.dumps(meta))
    return meta


# ------------------------------------------------------------------------------------------
# One setting: noise → train (with step checkpoints) → embed → methods; probe over the checkpoints
# ------------------------------------------------------------------------------------------


def run_setting(name: str, spec: tuple[str, float] | None, a: argparse.Namespace) -> dict[str, Any]:
    w = (a.out / name).resolve()
    w.mkdir(parents=True, exist_ok=True)
    r = Runner(w, sys.stderr, force=a.force, in_process=not a.subprocess)
    data = ["--dataset", "fashion-mnist", "--data-dir", str(a.subset_dir)]
    s: dict[str, Any] = {"setting": name}
    labels_in: list[Path] = []
    labels_args: list[str] = []
    if spec is not None:
        kind, rate = spec
        s["noise"] = r.step("noise", ["noise", *data, "--kind", kind, "--rate", str(rate), "--seed", str(a.seed), "-o", "labels.h5"],
                            [w / "labels.h5"], [])
        labels_in, labels_args = [w / "labels.h5"], ["--labels", "labels.h5"]
    s["train"] = r.step("train", ["train", *data, *labels_args, "--arch", a.arch, "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
                                  "--lr", str(a.lr), "--seed", str(a.seed), "--num-threads", "1",
                                  "--checkpoint-every", str(a.checkpoint_every), "--checkpoint-dir", "ckpt", "-o", "model.pt"],
                        [w / "model.pt"], labels_in)
    s["embed_train"] = r.step("embed_train", ["embed", "model.pt", *data, "--split", "train", "--layers", "all", "--num-threads", "1",
                                              "-o", "train.h5"], [w / "train.h5"], [w / "model.pt"])
    s["embed_test"] = r.step("embed_test", ["embed", "model.pt", *data, "--split", "test", "--layers", "all", "--num-threads", "1",
                                            "-o", "test.h5"], [w / "test.h5"], [w / "model.pt"])
    tr, te = [w / "train.h5"], [w / "test.h5"]
    s["probe"] = r.step("probe", ["probe", "train.h5", "test.h5", "--layers", "all", "--classifiers", "knn", "-k", str(a.probe_k),
                                  "--num-threads", "1", "-o", "probe.h5"], [w / "probe.h5"], tr + te)
    if name != "random":  # test accuracy against random labels is chance for every method: probe only
        s["dknn"] = r.step("dknn", ["dknn", "train.h5", "test.h5", "-k", str(a.dknn_k), "--calibration", str(a.calibration),
                                    "--calibration-mode", "stratified", "--seed", str(a.seed), "--num-threads", "1", "-o", "dknn.h5"],
                           [w / "dknn.h5"], tr + te)
        s["lasenn"] = r.step("lasenn", ["lasenn", "train.h5", "test.h5", "--layer", "paper", "-k", "3", "--k-sweep", a.lasenn_ks,
                                        "--w-q", a.w_qs, "--select-on", "validation", "--val-fraction", str(a.val_fraction),
                                        "--seed", str(a.seed), "--num-threads", "1", "-o", "lasenn.h5"], [w / "lasenn.h5"], tr + te)
        s["knet_fit"] = r.step("knet_fit", ["distill-knet", "train.h5", "--layer", "penultimate", "--k-range", f"1:{a.k_max}",
                                            "--epochs", str(a.knet_epochs), "--seed", str(a.seed), "-o", "knet.pt"], [w / "knet.pt"], tr)
        s["knet_eval"] = r.step("knet_eval", ["distill-knet", "knet.pt", "--eval", "test.h5", "--train", "train.h5", "--k-sweep", a.knet_ks,
                                              "--select-on", "validation", "--val-fraction", str(a.val_fraction), "--seed", str(a.seed),
                                              "-o", "knet_pred.h5"], [w / "knet_pred.h5"], [w / "knet.pt", *tr, *te])
    # the over-fitting curve: probe on activations of the step checkpoints (and the final model)
    ckpts = sorted((w / "ckpt").glob("step-*.pt"))
    picks = ckpts if len(ckpts) <= a.curve_points else [ckpts[round(i * (len(ckpts) - 1) / (a.curve_points - 1))] for i in range(a.curve_points)]
    curve_tr, curve_te = [], []
    for ck in picks:
        stem = ck.stem
        for split, dest in (("train", curve_tr), ("test", curve_te)):
            out = w / "ckpt" / f"{stem}.{split}.h5"
            r.step(f"embed_{stem}_{split}", ["embed", str(ck.relative_to(w)), *data, "--split", split, "--layers", "all",
                                             "--num-threads", "1", "-o", str(out.relative_to(w))], [out], [ck])
            dest.append(out)
    # the last step checkpoint is the final network (--epochs * steps per epoch is a multiple of --checkpoint-every)
    files = [str(p.relative_to(w)) for p in curve_tr]
    tests = [x for p in curve_te for x in ("--test", str(p.relative_to(w)))]
    s["curve"] = r.step("probe_curve", ["probe", "--checkpoints", *files, *tests, "--layers", "all", "--classifiers", "knn", "-k",
                                        str(a.probe_k), "--num-threads", "1", "-o", "curve.h5"],
                        [w / "curve.h5"], [*curve_tr, *curve_te])
    s["_ran"], s["_reused"] = r.ran, r.reused
    return s


# ------------------------------------------------------------------------------------------
# Gathering: every number is read from one command's --json summary
# ------------------------------------------------------------------------------------------


def _probe(s: dict[str, Any], layer: str, classifier: str, split: str, key: str) -> Any:
    for row in s.get("rows", []):
        if row.get("layer") == layer and row.get("classifier") == classifier and row.get("split") == split:
            return row.get(key)
    return None


def table_row(s: dict[str, Any]) -> dict[str, Any]:
    tr = s["train"]
    layers = s["probe"].get("layers", [])
    pen = layers[-2] if len(layers) >= 2 else (layers[0] if layers else None)
    row: dict[str, Any] = {
        "setting": s["setting"],
        "kind": (SETTINGS[s["setting"]] or ("clean", 0.0))[0],
        "rate": (SETTINGS[s["setting"]] or ("clean", 0.0))[1],
        "labels_changed": (s.get("noise") or {}).get("actual_rate", 0.0),
        "dnn_train_acc_noisy": tr["history"][-1]["train_acc"],
        "memorised": tr["history"][-1]["train_acc"] > 0.95,
        "dnn": _probe(s["probe"], pen, "dnn", "test", "accuracy"),
        "probe_knn_penultimate": _probe(s["probe"], pen, "knn", "test", "accuracy"),
        "p_same_penultimate": _probe(s["probe"], pen, "knn", "test", "p_same"),
    }
    if "dknn" in s:
        kev, las = s["knet_eval"], s["lasenn"]
        knn_rows = [x for x in kev.get("accuracy", []) if x.get("knn_accuracy") is not None]
        best = max(knn_rows, key=lambda x: x["knn_accuracy"]) if knn_rows else {}
        k1 = next((x for x in knn_rows if x.get("k") == 1), {})
        sel = kev.get("selection") or {}  # k chosen on validation rows (kNet's k and plain kNN's k)
        at_knn = next((x for x in kev.get("accuracy", []) if x.get("k") == sel.get("knn_k")), {})
        at_knet = next((x for x in kev.get("accuracy", []) if x.get("k") == sel.get("k")), {})
        lsel = las.get("selection") or {}  # (k, w_q) chosen on validation rows; accuracy is at the chosen pair
        row.update({
            "dnn_lasenn_rows": las.get("accuracy_original"),
            "knn_val_k": sel.get("knn_k"), "knn": at_knn.get("knn_accuracy"),
            "knn_oracle": best.get("knn_accuracy"), "knn_oracle_k": best.get("k"), "knn_1": k1.get("knn_accuracy"),
            "dknn": s["dknn"].get("accuracy"), "dknn_dnn_same_rows": s["dknn"].get("dnn_accuracy"),
            "lasenn": las.get("accuracy"), "lasenn_k": lsel.get("k"), "lasenn_w_q": lsel.get("w_q"),
            "knet_k": sel.get("k"), "knet": at_knet.get("knet_accuracy"),
        })
    return row


COLUMNS = [("setting", "setting"), ("labels_changed", "labels changed"), ("dnn_train_acc_noisy", "DNN train acc (noisy labels)"),
           ("dnn", "DNN"), ("knn", "kNN (k on val)"), ("knn_val_k", "k"), ("knn_oracle", "kNN (best k on test)"), ("knn_1", "1-NN"),
           ("dknn", "DkNN†"), ("dknn_dnn_same_rows", "DNN on DkNN rows"), ("lasenn", "LaSeNN (w_q on val)"), ("lasenn_w_q", "w_q"),
           ("knet", "kNet (k on val)"), ("knet_k", "kNet k"), ("p_same_penultimate", "P_SAME penult.")]


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 or v == 1.0 else f"{v:g}"
    return str(v)


def write_tables(out: Path, rows: list[dict[str, Any]], results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: [c for c, _ in COLUMNS].index(k) if k in dict(COLUMNS) else 99)
    with open(out / "results.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    lines += ["", f"Fashion-MNIST, stratified {meta['n_train']} training / {meta['n_test']} test images, {meta['arch']} trained "
              f"{meta['epochs']} epochs (Adam, lr {meta['lr']}, batch {meta['batch_size']}), seed {meta['seed']}. Test accuracy "
              f"against clean labels. DNN, kNN, kNet, LaSeNN: all test rows; † DkNN: the test rows minus its {meta['calibration']} "
              f"stratified calibration rows (the DNN's accuracy on the same rows beside it). kNN/kNet k and LaSeNN (k, w_q) are "
              f"chosen on a {meta['val_fraction']:.0%} validation split of the training rows (their noisy labels), never on test "
              f"labels; 'best k on test' is an oracle for reference. Wall time {meta['seconds']:.0f} s with {meta['jobs']} "
              f"setting(s) at a time, one torch thread each."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    with open(out / "layers.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["setting", "layer", "classifier", "split", "accuracy", "p_same", "kl"])
        for name, s in results.items():
            for x in s["probe"].get("rows", []):
                wr.writerow([name, x["layer"], x["classifier"], x["split"], x["accuracy"], x.get("p_same"), x.get("kl")])
    with open(out / "curves.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["setting", "step", "layer", "classifier", "split", "accuracy", "p_same"])
        for name, s in results.items():
            for x in s["curve"].get("rows", []):
                wr.writerow([name, x.get("step"), x["layer"], x["classifier"], x["split"], x["accuracy"], x.get("p_same")])


def plot(out: Path, rows: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["setting"]: r for r in rows}
    methods = [("dnn", "DNN"), ("knn", "kNN (k on val)"), ("knn_1", "1-NN"), ("dknn", "DkNN"), ("lasenn", "LaSeNN"), ("knet", "kNet")]
    written = []
    for fname, gain in (("accuracy_vs_noise.png", False), ("gain_vs_noise.png", True)):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, (family, names) in zip(axes, FAMILIES.items()):
            names = [n for n in names if n in by and "knn" in by[n]]
            xs = [100 * (SETTINGS[n] or ("", 0.0))[1] for n in names]
            for key, label in methods:
                if gain and key == "dnn":
                    continue
                base = "dknn_dnn_same_rows" if key == "dknn" else "dnn"
                ys = [(by[n].get(key) - by[n].get(base)) * 100 if gain else by[n].get(key) for n in names
                      if by[n].get(key) is not None]
                if len(ys) == len(xs):
                    ax.plot(xs, ys, marker="o", label=label)
            ax.set_title(f"{family} labels")
            ax.set_xlabel("noise rate (%)")
            ax.grid(alpha=0.3)
            if gain:
                ax.axhline(0, color="k", lw=0.8)
        axes[0].set_ylabel("gain over the DNN (points)" if gain else "test accuracy (clean labels)")
        axes[1].legend(fontsize=7)
        fig.suptitle("Gain over the memorising DNN vs label noise" if gain else "Test accuracy vs label noise, memorising LeNet")
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
        written.append(fname)
    if "random" in results:  # Cohen et al. Fig. 4: per-layer kNN accuracy, train (random labels) vs test
        prow = results["random"]["probe"]
        layers = prow.get("layers", [])
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for split, label in (("train", "kNN train acc. (random labels)"), ("test", "kNN test acc. (true labels)")):
            ax.plot(layers, [_probe(prow, ly, "knn", split, "accuracy") for ly in layers], marker="o", label=label)
        ax.plot(layers, [_probe(prow, ly, "dnn", "train", "accuracy") for ly in layers], ls="--", color="gray", label="DNN train acc.")
        ax.set_ylabel("accuracy")
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("Random labels: where memorisation appears")
        fig.tight_layout()
        fig.savefig(out / "layers_random_labels.png", dpi=120)
        plt.close(fig)
        written.append("layers_random_labels.png")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, s in results.items():
        layers = s["probe"].get("layers", [])
        pen = layers[-2] if len(layers) >= 2 else None
        pts = sorted((x["step"], x["p_same"]) for x in s["curve"].get("rows", [])
                     if x.get("layer") == pen and x.get("classifier") == "knn" and x.get("split") == "test" and x.get("step") is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("P_SAME(kNN, DNN), test, penultimate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("kNN-DNN agreement over training")
    fig.tight_layout()
    fig.savefig(out / "p_same_over_training.png", dpi=120)
    plt.close(fig)
    written.append("p_same_over_training.png")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"), help="Fashion-MNIST IDX files")
    p.add_argument("--out", type=Path, default=Path("runs/memorisation"))
    p.add_argument("--settings", default=None, help="comma list of " + ", ".join(SETTINGS) + " (default: all)")
    p.add_argument("--n-train", type=int, default=5000, help="stratified training subset (default 5000: 500 per class)")
    p.add_argument("--n-test", type=int, default=5000, help="stratified test subset (default 5000)")
    p.add_argument("--arch", default="lenet")
    p.add_argument("--epochs", type=int, default=100, help="enough for LeNet to fit 5000 random labels above 95 %%")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--checkpoint-every", type=int, default=400, help="optimizer steps between step checkpoints")
    p.add_argument("--curve-points", type=int, default=5, help="step checkpoints probed for the over-fitting curve (the last one included)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-k", type=int, default=30, help="probe's k (Cohen et al.: 30)")
    p.add_argument("--dknn-k", type=int, default=75, help="DkNN's k (Papernot & McDaniel: 75)")
    p.add_argument("--calibration", type=int, default=750)
    p.add_argument("--lasenn-ks", default="1,2,3,4,8", help="LaSeNN's k sweep (Schneider, Table 1)")
    p.add_argument("--w-qs", default="0.5,0.6,0.7,0.8,0.88,0.9,0.95,1.0", help="LaSeNN's w_q sweep")
    p.add_argument("--k-max", type=int, default=101, help="kNet trained over k in 1..K_MAX (Mizrahi & Avidan: 101)")
    p.add_argument("--knet-epochs", type=int, default=30)
    p.add_argument("--knet-ks", default="1,5,11,21,51,101")
    p.add_argument("--val-fraction", type=float, default=0.1, help="training rows held out to choose k / w_q")
    p.add_argument("--jobs", type=int, default=2, help="settings run in parallel (one torch thread each)")
    p.add_argument("--toy", action="store_true", help="CI size: 1000/500 images, one setting (permute32), 4 epochs")
    p.add_argument("--force", action="store_true", help="re-run every step")
    p.add_argument("--subprocess", action="store_true",
                   help="run each step as its own `knntools` process (default: in a worker process per setting, "
                        "through the same entry point, without a start-up per step)")
    p.add_argument("--json", action="store_true", help="also print one JSON summary (rows, steps run and reused) on stdout")
    a = p.parse_args(argv)
    if a.toy:
        a.n_train, a.n_test, a.epochs, a.checkpoint_every, a.curve_points = 1000, 500, 4, 16, 2
        a.settings = a.settings or "permute32"
        a.calibration, a.dknn_k, a.k_max, a.knet_epochs, a.knet_ks, a.lasenn_ks, a.w_qs = 100, 10, 21, 2, "1,5,21", "1,3", "0.5,0.88,1.0"
    names = [n.strip() for n in (a.settings or ",".join(SETTINGS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"unknown setting(s) {unknown}; expected some of {list(SETTINGS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    a.subset_dir = (a.out / "data").resolve()
    t0 = time.time()
    make_subset(a.data_dir, a.subset_dir, a.n_train, a.n_test, a.seed)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = max(1, min(a.jobs, len(names)))
    print(f"memorisation: {a.arch} on {a.n_train}/{a.n_test} Fashion-MNIST images, settings {', '.join(names)} → {a.out}", file=sys.stderr)
    order = sorted(names, key=lambda n: (n != "random", names.index(n)))  # the longest-running probe setting first
    done: dict[str, dict[str, Any]] = {}
    # settings run in spawned worker processes, each running its steps in-process unless --subprocess
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_setting, n, SETTINGS[n], a): n for n in order}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
    seconds = time.time() - t0
    results = {n: done[n] for n in names}
    rows = [table_row(results[n]) for n in names]
    meta = {"n_train": a.n_train, "n_test": a.n_test, "arch": a.arch, "epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size,
            "seed": a.seed, "calibration": a.calibration, "val_fraction": a.val_fraction, "seconds": seconds, "jobs": jobs}
    write_tables(a.out, rows, results, meta)
    figures = plot(a.out, rows, results)
    ran = sum(len(s["_ran"]) for s in results.values())
    reused = sum(len(s["_reused"]) for s in results.values())
    print((a.out / "results.md").read_text(), file=sys.stderr)
    print(f"memorisation: {ran} steps run, {reused} reused (current by provenance), {seconds:.0f} s; figures {', '.join(figures)}",
          file=sys.stderr)
    if a.json:
        print(json.dumps({"command": "memorisation", "out": str(a.out), "rows": rows, "figures": figures, "steps_run": ran,
                          "steps_reused": reused, "seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
