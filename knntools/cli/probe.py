"""``knntools probe``: compare a network with k-NN / linear SVM / logistic regression on its layers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, Json, NumThreads, OutputPath, Quiet, Seed, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Ef, EfConstruction, HnswM, Metric

HELP = """Probe layers with k-NN (k = 30), linear SVM and logistic regression (Cohen, Giryes & Sapiro).

For each chosen layer, fits the classifiers on the training activations (with the labels the
network was trained on) and reports, on train and test and per classifier: accuracy, P_SAME
(agreement with the network's arg-max, Eq. 2), D_KL(p_M || q_DNN) averaged over samples (Eq. 1)
and the agreement counts (both right / only M / only DNN / both wrong). Train k-NN is the
paper's plain k-NN: each training sample is one of its own k neighbours (--no-loo, default);
--loo leaves it out (a deviation). Train accuracy is measured against the training labels (memorisation with random
labels), test accuracy against the ground truth.

Over training: --checkpoints with the training activation files of several checkpoints (and their
test files via --test, or simply listed: files are told apart by their 'split' attribute and
paired by step) gives the curves of Figures 1, 2 and 5 against the step.

Scaling: k-NN uses the full layer and all training rows given; SVM and LR are fitted on at most
--fit-samples rows (seeded, stratified), standardised and PCA-reduced to --pca-dim components for
wider layers. --max-train / --max-test subsample the rows (seeded) for big or wide layers.
Each layer is read once and searched through one index per layer; a per-layer timing table
(read, k-NN train / test search, SVM / LR fit, metrics) is printed and in --json as timing_s.

Reads: activations (layers/<name>, logits, labels, labels_clean).
Writes: a table file (columns/<name>; one row per step, layer, classifier, split); --plot PNG.
"""

EPILOG = """Examples:

  knntools probe train.h5 test.h5 --layers all --classifiers knn,svm,lr -o probe.h5 --plot probe.png --json

  knntools probe --checkpoints ckpt_train_*.h5 --test ckpt_test_*.h5 --layers penultimate -o curves.h5 --plot curves.png

  knntools probe train.h5 test.h5 --layers all --max-train 10000 --classifiers knn -o p.h5
"""

STEP_ATTRS = ("step", "global_step", "train_step", "checkpoint_step", "model_step", "epoch", "model_epoch")


def _step_of(kf: Any) -> float | None:
    """Checkpoint step of an activation file: a step-like root attribute, else the last integer in its name."""
    for key in STEP_ATTRS:
        v = kf.attrs.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    nums = re.findall(r"\d+", kf.path.stem)
    return float(nums[-1]) if nums else None


def _role(kf: Any, given_as_test: bool) -> str:
    split = str(kf.attrs.get("split") or "").lower()
    if split == "train":
        return "train"
    if split in ("test", "val", "valid", "validation"):
        return "test"
    return "test" if given_as_test else "train"


@handle_errors("probe")
def probe_cli(
    output: OutputPath,
    files: Annotated[Optional[List[Path]], typer.Argument(help="TRAIN.h5 [TEST.h5]; with --checkpoints, the activation files of several checkpoints.", dir_okay=False, show_default=False)] = None,
    test: Annotated[Optional[List[Path]], typer.Option("--test", help="Test activation file(s) (repeatable; with --checkpoints, one per checkpoint).", dir_okay=False)] = None,
    checkpoints: Annotated[bool, typer.Option("--checkpoints", help="Files are checkpoints of one training run: probe each and report curves against the step.")] = False,
    layers: Annotated[str, typer.Option("--layers", help="all | hidden | penultimate | comma list of layer names.")] = "penultimate",
    classifiers: Annotated[str, typer.Option("--classifiers", help="Comma list of knn, svm, lr.")] = "knn,svm,lr",
    k: Annotated[int, typer.Option("-k", "--k", "--n-neighbors", min=1, help="Neighbours of the k-NN probe (paper: 30).")] = 30,
    loo: Annotated[bool, typer.Option("--loo/--no-loo", help="Train-split k-NN: leave each sample out of its own vote (--loo, a deviation) or not (--no-loo: the paper's k-NN fitted and applied on the training set).")] = False,
    pca_dim: Annotated[int, typer.Option("--pca-dim", min=0, help="SVM/LR: reduce layers wider than this with PCA (0 = never).")] = 256,
    fit_samples: Annotated[int, typer.Option("--fit-samples", min=0, help="SVM/LR: fit on at most this many training rows (seeded, stratified; 0 = all).")] = 10000,
    max_train: Annotated[int, typer.Option("--max-train", min=0, help="Use a seeded stratified subsample of this many training rows for everything (0 = all).")] = 0,
    max_test: Annotated[int, typer.Option("--max-test", min=0, help="Evaluate on a seeded subsample of this many test rows (0 = all).")] = 0,
    trained_rows: Annotated[Optional[Path], typer.Option("--trained-rows", help="A `knntools train` checkpoint: keep only the training rows it was trained on (its --subset; all rows when it used none).", dir_okay=False)] = None,
    C: Annotated[float, typer.Option("--C", min=1e-12, help="Inverse regularisation of SVM and LR.")] = 1.0,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also write a PNG: metrics against layer depth (Figure 4) or, with --checkpoints, against the step (Figures 1, 2, 5).", dir_okay=False)] = None,
    backend: Backend = "exact",
    metric: Metric = "l2",
    M: HnswM = None,
    ef_construction: EfConstruction = None,
    ef: Ef = None,
    num_threads: NumThreads = 2,
    device: Device = "auto",
    seed: Seed = 0,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    import time

    import numpy as np

    from knntools.cli._search_options import search_params
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_output_path, check_same_source
    from knntools.io.table import rows_to_columns, write_table
    from knntools.methods import probe as pb
    from knntools.utils import softmax

    out = Output("probe", json_mode=json_, quiet=quiet, verbose=verbose)
    t0 = time.perf_counter()
    # ---- validate ---------------------------------------------------------------------------
    clf_list = pb.parse_classifiers(classifiers)
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads or None,
                           seed=seed, device=device)
    pos = list(files or [])
    tests = list(test or [])
    if not pos:
        raise InputError("no input files; expected TRAIN.h5 [TEST.h5] (or --checkpoints TRAIN_1.h5 … --test TEST_1.h5 …)")
    check_output_path(output, force)
    if plot is not None:
        if plot.resolve() == Path(output).resolve():
            raise InputError(f"--plot {plot}: same path as the output; expected a different .png path")
        check_output_path(plot, force)
    keep_ids = None
    if trained_rows is not None:
        from knntools.models.checkpoint import load_checkpoint

        ck = load_checkpoint(trained_rows)
        if "subset_ids" in ck:
            keep_ids = np.asarray(ck["subset_ids"].numpy(), dtype=np.int64)
        model_uuid_ck = (ck.get("provenance") or {}).get("model_uuid")
        del ck
    opened: list[Any] = []
    try:
        for p in pos + tests:
            opened.append(KFile(p, kind="activations"))
        n_pos = len(pos)
        # pairs of (step, train KFile, test KFile or None)
        if checkpoints:
            roles = [(kf, _role(kf, i >= n_pos)) for i, kf in enumerate(opened)]
            trs = [kf for kf, r in roles if r == "train"]
            tes = [kf for kf, r in roles if r == "test"]
            if not trs:
                raise InputError("--checkpoints: no training activation files found (attribute split='train' or given positionally)")
            steps_tr = [_step_of(kf) for kf in trs]
            steps_te = [_step_of(kf) for kf in tes]
            if tes and len(tes) != len(trs):
                raise InputError(f"--checkpoints: {len(trs)} training files but {len(tes)} test files; expected one test file per checkpoint (or none)")
            if all(s is not None for s in steps_tr) and len(set(steps_tr)) == len(steps_tr):
                if tes and (any(s is None for s in steps_te) or sorted(steps_te) != sorted(steps_tr)):
                    raise InputError(f"--checkpoints: the test files' steps {steps_te} do not match the training files' steps {steps_tr}; expected one test file per checkpoint step")
                by_step = {s: kf for s, kf in zip(steps_te, tes)}
                pairs = sorted(((s, kf, by_step.get(s)) for s, kf in zip(steps_tr, trs)), key=lambda t: t[0])
            else:  # no usable steps: pair in the given order, step = position
                pairs = [(float(i), kf, tes[i] if tes else None) for i, kf in enumerate(trs)]
        else:
            if len(pos) > 2 or (len(pos) == 2 and tests) or len(tests) > 1:
                raise InputError(f"expected TRAIN.h5 [TEST.h5], got {len(pos) + len(tests)} files; use --checkpoints for several checkpoints")
            tr = opened[0]
            te = opened[1] if len(opened) > 1 else None
            pairs = [(None, tr, te)]
        # layer names, shapes, classes, logits: all checked before any fitting
        plan = []
        for step, tr, te in pairs:
            names = tr.resolve_layers(layers)
            for f in (tr, te):
                if f is None:
                    continue
                if not f.has("logits"):
                    raise InputError(f"{f.path}: dataset 'logits' not found; expected the network's logits (re-run `knntools embed`)")
                if not f.has("labels"):
                    raise InputError(f"{f.path}: dataset 'labels' not found; expected the labels")
            if te is not None:
                for n in names:
                    te.layer_path(n)
                check_same_source(tr, te, names)
                if te.dataset("logits").shape[1] != tr.dataset("logits").shape[1]:
                    raise InputError(f"{te.path}: logits have {te.dataset('logits').shape[1]} classes but {tr.path} has {tr.dataset('logits').shape[1]}; expected the same classes")
            n_tr = tr.n_samples
            if trained_rows is not None:
                mu = tr.attrs.get("model_uuid")
                if mu and model_uuid_ck and mu != model_uuid_ck:
                    raise InputError(f"--trained-rows {trained_rows}: model_uuid {model_uuid_ck} differs from {tr.path}'s {mu}; expected the checkpoint the activations came from")
                if keep_ids is not None:
                    missing = np.setdiff1d(keep_ids, tr.read("ids"))
                    if len(missing):
                        raise InputError(f"--trained-rows {trained_rows}: {len(missing)} trained ids (e.g. {int(missing[0])}) are not in {tr.path}'s ids; expected activations of the full training split")
                    n_tr = len(keep_ids)
            n_tr = min(n_tr, max_train) if max_train else n_tr
            if "knn" in clf_list and k >= n_tr:
                raise InputError(f"-k {k}: must be smaller than the training size ({tr.path}: {n_tr} samples used)")
            plan.append((step, tr, te, names))
        if checkpoints and len({tuple(p[3]) for p in plan}) > 1:
            raise InputError("--checkpoints: the checkpoints' files resolve --layers to different layers; expected the same layers in every file")

        # ---- work -------------------------------------------------------------------------
        cfg = pb.ProbeConfig(k=k, metric=metric, backend=backend, search_params=params, pca_dim=pca_dim or None,
                             fit_samples=fit_samples or None, C=C, random_state=seed, loo=loo)
        rows: list[dict[str, Any]] = []
        infos: list[dict[str, Any]] = []
        parents: list[str] = []
        for step, tr, te, names in plan:
            parents += [tr.uuid] + ([te.uuid] if te is not None else [])
            y_tr_all = tr.read_labels("labels")
            base = np.arange(tr.n_samples)
            if keep_ids is not None:
                base = np.flatnonzero(np.isin(tr.read("ids"), keep_ids))
            r_tr = base[pb.stratified_subsample(y_tr_all[base], max_train or None, seed)]
            y_tr = y_tr_all[r_tr]
            y_tr_clean = tr.read_labels("labels_clean")[r_tr] if tr.has("labels_clean") else None
            if y_tr_clean is not None and np.array_equal(y_tr_clean, y_tr):
                y_tr_clean = None
            full_tr = len(r_tr) == tr.n_samples
            q_tr = softmax(tr.read("logits", None if full_tr else r_tr), axis=1)
            n_classes = max(tr.n_classes, q_tr.shape[1])
            if te is not None:
                y_te_all = te.truth_labels()
                r_te = pb.stratified_subsample(y_te_all, max_test or None, seed)
                full_te = len(r_te) == te.n_samples
                y_te = y_te_all[r_te]
                q_te = softmax(te.read("logits", None if full_te else r_te), axis=1)
            for name in names:
                t1 = time.perf_counter()
                X_tr = tr.read_layer(name, None if full_tr else r_tr)  # each layer read once, both splits
                X_te = te.read_layer(name, None if full_te else r_te) if te is not None else None
                read_s = time.perf_counter() - t1
                lrows, info = pb.probe_layer(X_tr, y_tr, q_tr, X_te, q_te if te is not None else None,
                                             y_te if te is not None else None, clf_list, n_classes, cfg, y_train_clean=y_tr_clean)
                dt = time.perf_counter() - t1
                for r in lrows:
                    rows.append({**({"step": step} if checkpoints else {}), "layer": name, "dim": int(X_tr.shape[1]), **r})
                info["timing_s"] = {"read_s": read_s, **info["timing_s"]}
                infos.append({"step": step, "layer": name, "dim": int(X_tr.shape[1]), "n_train": int(len(X_tr)),
                              "n_test": int(len(X_te)) if X_te is not None else 0, "time_s": dt, **info})
                out.detail(f"{'step ' + format(step, 'g') + ' ' if checkpoints else ''}{name}: {dt:.1f}s")
                del X_tr, X_te
    finally:
        for kf in opened:
            kf.close()

    # ---- write ----------------------------------------------------------------------------
    base_cols = (["step"] if checkpoints else []) + ["layer", "dim", "classifier", "split", "n", "accuracy", "accuracy_clean",
                                                     "p_same", "kl", "n_same", "n_different", "n_both_correct",
                                                     "n_model_only_correct", "n_dnn_only_correct", "n_both_wrong", "converged"]
    present = [c for c in base_cols if any(c in r for r in rows)]
    cols = rows_to_columns(rows, present)
    if "converged" in cols:  # dnn / knn rows have no convergence flag: store 1 / 0 / -1 (not applicable)
        cols["converged"] = [(-1 if not isinstance(v, bool) else int(v)) for v in cols["converged"]]
    memo = None
    if checkpoints:
        memo = {}
        for name in plan[0][3]:
            sel = [r for r in rows if r["layer"] == name and r["classifier"] == "dnn" and r["split"] == "train"]
            memo[name] = pb.memorization_step([r["step"] for r in sel], [r["accuracy"] for r in sel])
    run_params = {"layers": layers, "classifiers": clf_list, "k": k, "loo": loo, "metric": metric, "backend": backend,
                  "search_params": params, "pca_dim": pca_dim, "fit_samples": fit_samples, "max_train": max_train,
                  "max_test": max_test, "C": C, "trained_rows": str(trained_rows) if trained_rows else None,
                  "n_trained_rows": int(len(keep_ids)) if keep_ids is not None else None, "checkpoints": checkpoints,
                  "accuracy_targets": {"train": "labels (as trained)", "test": "labels_clean if present else labels"}}
    write_table(output, cols, table="one row per " + ("step, " if checkpoints else "") + "layer, classifier (dnn = the network itself) and split",
                attrs={"method": "probe", "params": run_params, "layers_info": infos, "memorization_step": memo},
                parents=parents, seed=seed, force=force)
    if plot is not None:
        from knntools.plotting.probe import plot_curves, plot_layers, save_png

        arrs = {kk: np.asarray(v, dtype=object if kk in ("layer", "classifier", "split") else None) for kk, v in cols.items()}
        fig = plot_curves(arrs, memorization=memo) if checkpoints else plot_layers(arrs)
        save_png(fig, plot, force=force)
    elapsed = time.perf_counter() - t0

    # ---- report -----------------------------------------------------------------------------
    show = ["step"] if checkpoints else []
    out.table(f"probe ({', '.join(clf_list)}; k={k}) — accuracy / P_SAME / D_KL(M‖DNN)", show + ["layer", "classifier", "split", "accuracy", "p_same", "kl"],
              [tuple(([format(r["step"], "g")] if checkpoints else []) + [r["layer"], r["classifier"], r["split"], r["accuracy"], r["p_same"], r["kl"]]) for r in rows])
    stages = ["read_s", "knn_train_s", "knn_test_s", "svm_fit_s", "lr_fit_s", "metrics_s"]
    out.table("per-layer timing (s)", show + ["layer", "dim", "read", "knn train", "knn test", "svm fit", "lr fit", "metrics"],
              [tuple(([format(i["step"], "g")] if checkpoints else []) + [i["layer"], i["dim"]] + [i["timing_s"][s_] for s_ in stages])
               for i in infos])
    timing_s = {"total": elapsed, **{s_[:-2]: float(sum(i["timing_s"][s_] for i in infos)) for s_ in stages},
                "per_layer": [{"step": i["step"], "layer": i["layer"], "dim": i["dim"], **i["timing_s"]} for i in infos]}
    if memo and any(v is not None for v in memo.values()):
        out.info(f"memorisation (DNN train accuracy = 100 %) first at step(s): {memo}")
    out.info(f"{len(rows)} rows → {output}" + (f", plot → {plot}" if plot else "") + f" ({elapsed:.1f}s)")
    outputs = [str(output)] + ([str(plot)] if plot else [])
    out.result({"command": "probe", "output": str(output), "plot": str(plot) if plot else None, "checkpoints": checkpoints,
                "n_checkpoints": len(plan), "layers": plan[0][3], "classifiers": clf_list, "k": k,
                "rows": rows, "layers_info": infos, "memorization_step": memo, "time_s": elapsed,
                "timing_s": timing_s}, outputs)
