#!/usr/bin/env python3
"""One comparison of every method on the same network: DNN vs kNN vs DkNN vs LaSeNN vs kNet (+ probe).

For each noise setting (clean, uniform 40 %, random-asymmetric 30 %, semantic 40 %) this runs the
knntools pipeline

    noise → train → embed (train, test) → index → dknn / lasenn / distill-knet (fit, eval) / probe

with every command's ``--json`` summary saved next to its output, then gathers the summaries into
one table (``results.md``, ``results.csv``) and one figure (``results.png``) in ``--out``.

Each setting runs in a worker process that executes its steps through ``knntools.cli.main``, the
console script's own entry point (same outputs and provenance, no interpreter start-up per step);
``--subprocess`` runs every step as its own ``knntools`` process instead, as the shell would.

Re-runs continue instead of restarting: a step is skipped when its outputs exist and are *current by
provenance* — the command recorded in the output (``knntools info --json``) is the one this run
would execute, and the output's parent uuids include the current uuids of its inputs. Change a
setting, retrain a model or delete a file, and exactly the steps downstream of it run again.

Usage (from the repository root, with knntools installed)::

    python examples/compare.py                              # digits + mlp, about 25 s on 2 cores
    python examples/compare.py --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist \\
        --arch dknn-cnn --epochs 3 --out runs/compare-fmnist
    python examples/compare.py --toy --out /tmp/cmp        # CI smoke size

Every number in the table is read from one command's ``--json`` summary (named in the CSV's
``source`` column), so it agrees with running that command by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

SETTINGS: dict[str, tuple[str, float] | None] = {
    "clean": None,
    "uniform40": ("uniform", 0.4),
    "asym30": ("asymmetric-random", 0.3),
    "semantic40": ("semantic", 0.4),
}
IGNORED_FLAGS = {"--json", "--force", "-q", "--quiet"}


def knntools_cmd() -> list[str]:
    """The knntools executable: on PATH, else ``python -m knntools``."""
    exe = shutil.which("knntools")
    return [exe] if exe else [sys.executable, "-m", "knntools"]


def run_in_process(args: list[str], cwd: Path, log_path: Path) -> tuple[int, str]:
    """Run ``knntools ARGS`` in this process, as the console script would: same entry point
    (:func:`knntools.cli.main`), same recorded command line, stdout captured, stderr to ``log_path``.

    Saves an interpreter start-up and the torch import per step. Not thread-safe (it changes the
    working folder, stdout/stderr and torch's thread count): one step at a time per process.
    """
    import contextlib
    import io

    import torch

    from knntools.cli import main as knntools_main

    threads, old_cwd, out = torch.get_num_threads(), os.getcwd(), io.StringIO()
    code: Any = 0
    with open(log_path, "w") as err, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.chdir(cwd)
        try:
            knntools_main(list(args))
        except SystemExit as exc:
            code = exc.code
        finally:
            os.chdir(old_cwd)
            torch.set_num_threads(threads)  # a command may have changed it; the next one starts as a fresh process would
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue()


class Runner:
    """Runs knntools steps for one setting, skipping those whose outputs are current.

    ``in_process=True`` runs each step through :func:`run_in_process` instead of a new
    ``knntools`` process (same code path and outputs, no start-up per step).
    """

    def __init__(self, workdir: Path, log: Any, force: bool = False, in_process: bool = False):
        self.workdir = workdir
        self.log = log
        self.force = force
        self.in_process = in_process
        self.ran: list[str] = []
        self.reused: list[str] = []

    # -- provenance -------------------------------------------------------------------------
    @staticmethod
    def info(paths: list[Path]) -> list[dict[str, Any]]:
        """What ``knntools info --json`` reports for ``paths`` ([] when a file cannot be read).

        In this process when knntools imports here (the same function the command calls, without a
        second interpreter's start-up per step), else through the command itself.
        """
        try:
            from knntools.cli.info import describe
        except ImportError:
            describe = None
        if describe is not None:
            try:
                return json.loads(json.dumps([describe(Path(p)) for p in paths], default=str))
            except Exception:  # noqa: BLE001 - unreadable or foreign file: not current
                return []
        proc = subprocess.run([*knntools_cmd(), "info", "--json", *map(str, paths)], capture_output=True, text=True)
        if proc.returncode != 0:
            return []
        return json.loads(proc.stdout)["files"]

    @staticmethod
    def _norm(argv: list[str]) -> list[str]:
        out = [a for a in argv if a not in IGNORED_FLAGS]
        return out[1:] if out and out[0].endswith("knntools") else out

    def current(self, outputs: list[Path], args: list[str], inputs: list[Path]) -> bool:
        """Outputs exist, record this exact command (when they record one), and descend from the inputs' current uuids."""
        if self.force or not all(o.exists() for o in outputs):
            return False
        infos = self.info([*outputs, *inputs])
        if len(infos) != len(outputs) + len(inputs):
            return False
        out_infos, in_infos = infos[: len(outputs)], infos[len(outputs):]
        want_parents = {d["provenance"].get("uuid") for d in in_infos} - {None}
        for d in out_infos:
            prov = d["provenance"]
            recorded = prov.get("command")
            if recorded and self._norm(list(recorded)) != self._norm(["knntools", *args]):
                return False
            if not want_parents <= set(prov.get("parents") or []):
                return False
        return True

    # -- running ----------------------------------------------------------------------------
    def step(self, name: str, args: list[str], outputs: list[Path], inputs: list[Path]) -> dict[str, Any]:
        summary_path = self.workdir / f"{name}.json"
        if summary_path.exists() and self.current(outputs, args, inputs):
            self.reused.append(name)
            return json.loads(summary_path.read_text())
        t0 = time.time()
        log_path = self.workdir / f"{name}.log"
        if self.in_process:
            returncode, stdout = run_in_process([*args, "--json", "--force"], self.workdir, log_path)
        else:
            cmd = [*knntools_cmd(), *args, "--json", "--force"]
            with open(log_path, "w") as err:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=self.workdir)
            returncode, stdout = proc.returncode, proc.stdout
        if returncode != 0:
            tail = log_path.read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"{self.workdir.name}/{name} failed (exit {returncode}): {' '.join(args)}\n  " + "\n  ".join(tail))
        summary = json.loads(stdout.strip().splitlines()[-1])
        summary["_seconds"] = round(time.time() - t0, 2)
        summary["_command"] = ["knntools", *args]
        summary_path.write_text(json.dumps(summary, indent=1))
        self.ran.append(name)
        print(f"  [{self.workdir.name}] {name:<10s} {summary['_seconds']:7.1f} s", file=self.log, flush=True)
        return summary


def run_setting(name: str, spec: tuple[str, float] | None, a: argparse.Namespace) -> dict[str, Any]:
    """Run the whole pipeline for one noise setting; return its summaries."""
    w = (a.out / name).resolve()
    w.mkdir(parents=True, exist_ok=True)
    r = Runner(w, sys.stderr, force=a.force, in_process=not a.subprocess)
    data = ["--dataset", a.dataset] + (["--data-dir", str(a.data_dir)] if a.data_dir else [])
    s: dict[str, Any] = {}
    train_inputs: list[Path] = []
    labels_args: list[str] = []
    if spec is not None:
        kind, rate = spec
        s["noise"] = r.step("noise", ["noise", *data, "--kind", kind, "--rate", str(rate), "--seed", str(a.seed), "-o", "labels.h5"],
                            [w / "labels.h5"], [])
        train_inputs = [w / "labels.h5"]
        labels_args = ["--labels", "labels.h5"]
    s["train"] = r.step("train", ["train", *data, *labels_args, "--arch", a.arch, "--epochs", str(a.epochs), "--seed", str(a.seed),
                                  *a.train_args, "-o", "model.pt"], [w / "model.pt"], train_inputs)
    embed = ["--layers", a.layers, *a.embed_args]
    s["embed_train"] = r.step("embed_train", ["embed", "model.pt", *data, "--split", "train", *embed, "-o", "train.h5"], [w / "train.h5"], [w / "model.pt"])
    s["embed_test"] = r.step("embed_test", ["embed", "model.pt", *data, "--split", "test", *embed, "-o", "test.h5"], [w / "test.h5"], [w / "model.pt"])
    idx = w / "train.penultimate.hnsw"
    s["index"] = r.step("index", ["index", "train.h5", "--layers", "penultimate", "--backend", "hnsw", "-o", idx.name],
                        [idx], [w / "train.h5"])
    s["dknn"] = r.step("dknn", ["dknn", "train.h5", "test.h5", "-k", str(a.dknn_k), "--calibration", str(a.calibration),
                                "--backend", a.backend, "-o", "dknn.h5", "--plot", "reliability.png"],
                       [w / "dknn.h5"], [w / "train.h5", w / "test.h5"])
    s["lasenn"] = r.step("lasenn", ["lasenn", "train.h5", "test.h5", "--layer", "penultimate", "-k", "3", "--w-q", "0.88",
                                    "--backend", a.backend, "-o", "lasenn.h5"], [w / "lasenn.h5"], [w / "train.h5", w / "test.h5"])
    s["knet_fit"] = r.step("knet_fit", ["distill-knet", "train.h5", "--layer", "penultimate", "--k-range", f"1:{a.k_max}",
                                        "--epochs", str(a.knet_epochs), "--seed", str(a.seed), "--backend", "hnsw", "--index", idx.name,
                                        "-o", "knet.pt"], [w / "knet.pt"], [w / "train.h5"])
    s["knet_eval"] = r.step("knet_eval", ["distill-knet", "knet.pt", "--eval", "test.h5", "--train", "train.h5",
                                          "--k-sweep", a.knet_ks, "--backend", a.backend, "-o", "knet_pred.h5"],
                            [w / "knet_pred.h5"], [w / "knet.pt", w / "test.h5"])
    s["probe"] = r.step("probe", ["probe", "train.h5", "test.h5", "--layers", "penultimate", "--classifiers", a.classifiers,
                                  "--backend", a.backend, "--seed", str(a.seed), "-o", "probe.h5"],
                        [w / "probe.h5"], [w / "train.h5", w / "test.h5"])
    s["_ran"], s["_reused"] = r.ran, r.reused
    return s


def _get(d: Any, *keys: Any, default: Any = None) -> Any:
    for k in keys:
        if isinstance(d, dict) and k in d:
            d = d[k]
        else:
            return default
    return d


def table_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting, each value taken from one command's JSON summary."""
    rows = []
    for name, s in results.items():
        kev = s["knet_eval"]
        knn_rows = [x for x in kev.get("accuracy", []) if x.get("knn_accuracy") is not None]
        best_knn = max(knn_rows, key=lambda x: x["knn_accuracy"]) if knn_rows else {}
        k1 = next((x for x in kev.get("accuracy", []) if x.get("k") == 1), {})
        probe_knn = next((x for x in s["probe"].get("rows", []) if x.get("classifier") == "knn" and x.get("split") == "test"), {})
        rows.append({
            "setting": name,
            "noise_rate": round(_get(s, "noise", "actual_rate", default=0.0), 4),
            "dnn": s["lasenn"].get("accuracy_original"),
            "knn_best": best_knn.get("knn_accuracy"),
            "knn_best_k": best_knn.get("k"),
            "knn_k1": k1.get("knn_accuracy"),
            "dknn": s["dknn"].get("accuracy"),
            "dknn_dnn_same_rows": s["dknn"].get("dnn_accuracy"),
            "dknn_cred_correct": s["dknn"].get("mean_credibility_correct"),
            "dknn_cred_wrong": s["dknn"].get("mean_credibility_wrong"),
            "lasenn": s["lasenn"].get("accuracy"),
            "knet": kev.get("knet_accuracy"),
            "knet_k1": k1.get("knet_accuracy"),
            "knet_params": _get(kev, "memory", "knet_parameters"),
            "probe_knn_test_acc": probe_knn.get("accuracy"),
            "probe_knn_p_same": probe_knn.get("p_same"),
            "probe_knn_kl": probe_knn.get("kl"),
        })
    return rows


COLUMNS = [
    ("setting", "setting"), ("noise_rate", "labels changed"), ("dnn", "DNN"), ("knn_best", "kNN (best k)"),
    ("knn_best_k", "best k"), ("dknn", "DkNN†"), ("dknn_cred_correct", "DkNN cred. ✓"), ("dknn_cred_wrong", "DkNN cred. ✗"),
    ("lasenn", "LaSeNN"), ("knet", "kNet"), ("knn_k1", "1-NN"), ("knet_k1", "kNet k=1"), ("knet_params", "kNet params"),
    ("probe_knn_p_same", "P_SAME(kNN, DNN)"),
]


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_outputs(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    with open(out / "results.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[k]) for k, _ in COLUMNS) + " |")
    lines.append("")
    lines.append(f"Dataset {meta['dataset']}, arch {meta['arch']}, {meta['epochs']} epochs, seed {meta['seed']}; test accuracy "
                 f"against clean labels. † DkNN is evaluated on the test set minus its {meta['calibration']} calibration samples "
                 f"(the DNN's accuracy on those rows is `dknn_dnn_same_rows` in results.csv). kNN/kNet: penultimate layer, "
                 f"k in {{{meta['knet_ks']}}}; kNet at its predict k. Wall time {meta['seconds']:.0f} s, "
                 f"{meta['jobs']} setting(s) at a time, torch threads per process: {meta['threads']} (with the seed, the "
                 f"thread count fixes the trained network).")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [("dnn", "DNN"), ("knn_best", "kNN (best k)"), ("dknn", "DkNN"), ("lasenn", "LaSeNN"), ("knet", "kNet")]
    x = np.arange(len(rows))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.8 + 1.6 * len(rows)), 3.8))
    for i, (key, label) in enumerate(methods):
        vals = [r[key] if r[key] is not None else np.nan for r in rows]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, [r["setting"] for r in rows])
    accs = [r[k] for r in rows for k, _ in methods if r[k] is not None]
    ax.set_ylim(max(0.0, min(accs) - 0.05), min(1.0, max(accs) + 0.03))
    ax.set_ylabel("test accuracy (clean labels)")
    ax.set_title(f"{meta['dataset']} / {meta['arch']}: one network, every kNN method")
    ax.legend(ncol=3, fontsize=7, loc="upper right", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--arch", default=None, help="default: mlp for digits, dknn-cnn for 28×28 sets")
    p.add_argument("--epochs", type=int, default=None, help="default: 30 for digits, 3 otherwise")
    p.add_argument("--settings", default=None, help="comma-separated subset of " + ", ".join(SETTINGS) + " (default: all; --toy: clean,uniform40)")
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", default="all", help="embed --layers (DkNN uses all of them)")
    p.add_argument("--embed-args", default="", help="extra embed arguments, e.g. '--dtype float16'")
    p.add_argument("--train-args", default="", help="extra train arguments, e.g. '--subset 5000'")
    p.add_argument("--backend", default="exact", help="search backend of dknn, lasenn, knet eval, probe")
    p.add_argument("--dknn-k", type=int, default=None, help="default 75 (the paper), 10 on toy data")
    p.add_argument("--calibration", type=int, default=None, help="default 750 (the paper), 100 for digits")
    p.add_argument("--k-max", type=int, default=101)
    p.add_argument("--knet-epochs", type=int, default=30)
    p.add_argument("--knet-ks", default="1,11,51,101")
    p.add_argument("--classifiers", default="knn,lr")
    p.add_argument("--jobs", type=int, default=2, help="settings run in parallel")
    p.add_argument("--toy", action="store_true", help="CI smoke size: clean + uniform40, 3 epochs, small k")
    p.add_argument("--force", action="store_true", help="re-run every step")
    p.add_argument("--json", action="store_true", help="also print one JSON summary (rows, steps run and reused) on stdout")
    p.add_argument("--subprocess", action="store_true",
                   help="run each step as its own `knntools` process (default: in a worker process per setting, "
                        "through the same entry point, without a start-up per step)")
    a = p.parse_args(argv)
    small = a.dataset in ("digits", "iris", "wine", "breast-cancer")
    a.arch = a.arch or ("mlp" if small else "dknn-cnn")
    a.epochs = a.epochs or (30 if small else 3)
    a.calibration = a.calibration or (100 if small else 750)
    a.dknn_k = a.dknn_k or 75
    if a.toy:
        a.settings = a.settings or "clean,uniform40"
        a.epochs, a.dknn_k, a.k_max, a.knet_epochs, a.knet_ks = 3, 10, 21, 3, "1,5,21"
    a.embed_args = a.embed_args.split()
    a.train_args = a.train_args.split()
    names = [n.strip() for n in (a.settings or ",".join(SETTINGS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"unknown setting(s) {unknown}; expected some of {list(SETTINGS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(a.jobs, len(names)))
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Settings run as parallel processes; give each its share of the cores. Without this,
        # torch's intra-op threads of every process spin against each other on small batches.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    t0 = time.time()
    print(f"compare: {a.dataset} / {a.arch}, settings {', '.join(names)} → {a.out}", file=sys.stderr)
    meta = {"dataset": a.dataset, "arch": a.arch, "epochs": a.epochs, "seed": a.seed, "calibration": a.calibration,
            "knet_ks": a.knet_ks, "seconds": 0.0, "jobs": jobs, "threads": os.environ.get("OMP_NUM_THREADS", "all cores")}
    done: dict[str, dict[str, Any]] = {}
    # settings run in parallel worker processes (spawned: no torch state forked into them); each
    # runs its steps one after another, in-process unless --subprocess
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_setting, n, SETTINGS[n], a): n for n in names}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            meta["seconds"] = time.time() - t0
            # the table grows as settings finish (an interrupted run still leaves the finished rows)
            write_outputs(a.out, table_rows({n: done[n] for n in names if n in done}), meta)
    results = {n: done[n] for n in names}
    seconds = time.time() - t0
    rows = table_rows(results)
    meta["seconds"] = seconds
    write_outputs(a.out, rows, meta)
    ran = sum(len(s["_ran"]) for s in results.values())
    reused = sum(len(s["_reused"]) for s in results.values())
    print((a.out / "results.md").read_text(), file=sys.stderr)
    print(f"compare: {ran} steps run, {reused} reused (current by provenance), {seconds:.0f} s; "
          f"table {a.out / 'results.md'}, {a.out / 'results.csv'}, figure {a.out / 'results.png'}", file=sys.stderr)
    if a.json:
        print(json.dumps({"command": "compare", "out": str(a.out), "rows": rows, "steps_run": ran, "steps_reused": reused,
                          "seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
