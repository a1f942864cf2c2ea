"""``knntools probe``: compare a network with k-NN / linear SVM / logistic regression on its layers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import K, Device, Force, Json, Layers, NumThreads, OutputPath, Quiet, Seed, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Ef, EfConstruction, HnswM, Metric

HELP = """Probe layers (--layers) with k-NN (-k, the paper's k = 30), linear SVM and logistic regression (Cohen, Giryes & Sapiro).

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
    layers: Layers = "penultimate",
    classifiers: Annotated[str, typer.Option("--classifiers", help="Comma list of knn, svm, lr.")] = "knn,svm,lr",
    k: K = 30,
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

    from knntools.cli._search_options import search_params
    from knntools.errors import InputError
    from knntools.io.h5 import check_output_path
    from knntools.methods import probe as pb

    out = Output("probe", json_mode=json_, quiet=quiet, verbose=verbose)
    t0 = time.perf_counter()
    clf_list = pb.parse_classifiers(classifiers)
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads or None,
                           seed=seed, device=device)
    check_output_path(output, force)
    if plot is not None:
        if plot.resolve() == Path(output).resolve():
            raise InputError(f"--plot {plot}: same path as the output; expected a different .png path")
        check_output_path(plot, force)
    cfg = pb.ProbeConfig(k=k, metric=metric, backend=backend, search_params=params, pca_dim=pca_dim or None,
                         fit_samples=fit_samples or None, C=C, random_state=seed, loo=loo)
    opened: list[Any] = []
    try:
        runs, names, keep_ids, parents = _plan(list(files or []), list(test or []), checkpoints, layers, trained_rows, opened)
        res = pb.run_probe(runs, names, clf_list, cfg, max_train=max_train or None, max_test=max_test or None, progress=out.detail)
    finally:
        for kf in opened:
            kf.close()
    run_params = {"layers": layers, "classifiers": clf_list, "k": k, "loo": loo, "metric": metric, "backend": backend,
                  "search_params": params, "pca_dim": pca_dim, "fit_samples": fit_samples, "max_train": max_train,
                  "max_test": max_test, "C": C, "trained_rows": str(trained_rows) if trained_rows else None,
                  "n_trained_rows": int(len(keep_ids)) if keep_ids is not None else None, "checkpoints": checkpoints,
                  "accuracy_targets": {"train": "labels (as trained)", "test": "labels_clean if present else labels"}}
    _write(output, plot, res, checkpoints, run_params, parents, seed=seed, force=force)
    elapsed = time.perf_counter() - t0
    _report(out, res, clf_list, k, checkpoints, output, plot, elapsed)
    out.result({"command": "probe", "output": str(output), "plot": str(plot) if plot else None, "checkpoints": checkpoints,
                "n_checkpoints": len(runs), "layers": names, "classifiers": clf_list, "k": k,
                "rows": res.rows, "layers_info": res.layers_info, "memorization_step": res.memorization_step, "time_s": elapsed,
                "timing_s": _timing(res, elapsed)}, [str(output)] + ([str(plot)] if plot else []))


class _Rows:
    """A file dataset read lazily by rows (``a[rows]``, ``a[:]``) through ``KFile``'s checked readers."""

    def __init__(self, read: Any, name: str):
        self.read, self.name = read, name

    def __getitem__(self, rows: Any) -> Any:
        return self.read(self.name, None if isinstance(rows, slice) else rows)


class _Layers:
    """``name -> _Rows`` for every layer of a file (read with ``KFile.read_layer`` when probed)."""

    def __init__(self, kf: Any):
        self.kf = kf

    def __getitem__(self, name: str) -> _Rows:
        return _Rows(self.kf.read_layer, name)


def _split(kf: Any, train: bool, rows: Any = None) -> Any:
    """A :class:`knntools.methods.probe.ProbeSplit` over an activation file (arrays read when probed)."""
    from knntools.methods.probe import ProbeSplit

    return ProbeSplit(layers=_Layers(kf), logits=_Rows(kf.read, "logits"),  # type: ignore[arg-type]
                      labels=kf.read_labels("labels") if train else kf.truth_labels(),
                      labels_clean=kf.read_labels("labels_clean") if train and kf.has("labels_clean") else None,
                      rows=rows, n_classes=kf.n_classes)


def _plan(pos: list[Path], tests: list[Path], checkpoints: bool, layers: str, trained_rows: Optional[Path],
          opened: list[Any]) -> tuple[list[Any], list[str], Any, list[str]]:
    """Open, pair (by checkpoint step) and check the activation files; resolve the layers once."""
    import numpy as np

    from knntools.cli._knn_options import check_activation_pair
    from knntools.errors import InputError
    from knntools.io.h5 import KFile

    if not pos:
        raise InputError("no input files; expected TRAIN.h5 [TEST.h5] (or --checkpoints TRAIN_1.h5 … --test TEST_1.h5 …)")
    keep_ids = model_uuid_ck = n_split = None
    if trained_rows is not None:
        from knntools.models.checkpoint import load_checkpoint

        ck = load_checkpoint(trained_rows)
        if "subset_ids" in ck:  # row positions in the training split (not dataset ids: digits' ids are not 0..n-1)
            keep_ids = np.asarray(ck["subset_ids"].numpy(), dtype=np.int64)
        if "train_labels" in ck:
            n_split = int(len(ck["train_labels"]))
        model_uuid_ck = (ck.get("provenance") or {}).get("model_uuid")
        del ck
    for p in pos + tests:
        opened.append(KFile(p, kind="activations"))
    pairs = _pairs(opened, len(pos), checkpoints)
    runs, names_seen, parents = [], set(), []
    for step, tr, te in pairs:
        parents += [tr.uuid] + ([te.uuid] if te is not None else [])
        names = tr.resolve_layers(layers)
        names_seen.add(tuple(names))
        check_activation_pair(tr, te, names, labels=True)
        rows = None
        if trained_rows is not None:
            mu = tr.attrs.get("model_uuid")
            if mu and model_uuid_ck and mu != model_uuid_ck:
                raise InputError(f"--trained-rows {trained_rows}: model_uuid {model_uuid_ck} differs from {tr.path}'s {mu}; expected the checkpoint the activations came from")
            if keep_ids is not None:
                if (n_split is not None and tr.n_samples != n_split) or int(keep_ids.max(initial=-1)) >= tr.n_samples:
                    raise InputError(f"--trained-rows {trained_rows}: {tr.path} has {tr.n_samples} rows but the checkpoint's training split "
                                     f"has {n_split if n_split is not None else 'more'}; expected activations of the full training split")
                rows = np.unique(keep_ids)
        runs.append((step if checkpoints else None, _split(tr, True, rows), _split(te, False) if te is not None else None))
    if len(names_seen) > 1:
        raise InputError("--checkpoints: the checkpoints' files resolve --layers to different layers; expected the same layers in every file")
    return runs, list(next(iter(names_seen))), keep_ids, parents


def _pairs(opened: list[Any], n_pos: int, checkpoints: bool) -> list[tuple[Any, Any, Any]]:
    """(step, train KFile, test KFile or None) per checkpoint, or the one (None, train, test) pair."""
    from knntools.errors import InputError

    if not checkpoints:
        if n_pos > 2 or (n_pos == 2 and len(opened) > 2) or len(opened) - n_pos > 1:
            raise InputError(f"expected TRAIN.h5 [TEST.h5], got {len(opened)} files; use --checkpoints for several checkpoints")
        return [(None, opened[0], opened[1] if len(opened) > 1 else None)]
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
        return sorted(((s, kf, by_step.get(s)) for s, kf in zip(steps_tr, trs)), key=lambda t: t[0])
    return [(float(i), kf, tes[i] if tes else None) for i, kf in enumerate(trs)]  # no usable steps: given order


STAGES = ["read_s", "knn_train_s", "knn_test_s", "svm_fit_s", "lr_fit_s", "metrics_s"]


def _timing(res: Any, elapsed: float) -> dict[str, Any]:
    infos = res.layers_info
    return {"total": elapsed, "setup": float(res.setup_s), **{s_[:-2]: float(sum(i["timing_s"][s_] for i in infos)) for s_ in STAGES},
            "per_layer": [{"step": i["step"], "layer": i["layer"], "dim": i["dim"], **i["timing_s"]} for i in infos]}


def _write(output: Path, plot: Optional[Path], res: Any, checkpoints: bool, run_params: dict[str, Any], parents: list[str],
           *, seed: int, force: bool) -> None:
    """Write the table file (one row per step, layer, classifier and split) and the optional PNG."""
    import numpy as np

    from knntools.io.table import rows_to_columns, write_table

    rows = res.rows
    base_cols = (["step"] if checkpoints else []) + ["layer", "dim", "classifier", "split", "n", "accuracy", "accuracy_clean",
                                                     "p_same", "kl", "n_same", "n_different", "n_both_correct",
                                                     "n_model_only_correct", "n_dnn_only_correct", "n_both_wrong", "converged"]
    cols = rows_to_columns(rows, [c for c in base_cols if any(c in r for r in rows)])
    if "converged" in cols:  # dnn / knn rows have no convergence flag: store 1 / 0 / -1 (not applicable)
        cols["converged"] = [(-1 if not isinstance(v, bool) else int(v)) for v in cols["converged"]]
    write_table(output, cols, table="one row per " + ("step, " if checkpoints else "") + "layer, classifier (dnn = the network itself) and split",
                attrs={"method": "probe", "params": run_params, "layers_info": res.layers_info, "memorization_step": res.memorization_step},
                parents=parents, seed=seed, force=force)
    if plot is not None:
        from knntools.plotting.probe import plot_curves, plot_layers, save_png

        arrs = {kk: np.asarray(v, dtype=object if kk in ("layer", "classifier", "split") else None) for kk, v in cols.items()}
        fig = plot_curves(arrs, memorization=res.memorization_step) if checkpoints else plot_layers(arrs)
        save_png(fig, plot, force=force)


def _report(out: Output, res: Any, clf_list: list[str], k: int, checkpoints: bool, output: Path, plot: Optional[Path], elapsed: float) -> None:
    """Print the metrics table, the per-layer timing table and the memorisation steps."""
    show = ["step"] if checkpoints else []
    st = (lambda r: [format(r["step"], "g")]) if checkpoints else (lambda r: [])
    out.table(f"probe ({', '.join(clf_list)}; k={k}) — accuracy / P_SAME / D_KL(M‖DNN)", show + ["layer", "classifier", "split", "accuracy", "p_same", "kl"],
              [tuple(st(r) + [r["layer"], r["classifier"], r["split"], r["accuracy"], r["p_same"], r["kl"]]) for r in res.rows])
    out.table("per-layer timing (s)", show + ["layer", "dim", "read", "knn train", "knn test", "svm fit", "lr fit", "metrics"],
              [tuple(st(i) + [i["layer"], i["dim"]] + [i["timing_s"][s_] for s_ in STAGES]) for i in res.layers_info])
    memo = res.memorization_step
    if memo and any(v is not None for v in memo.values()):
        out.info(f"memorisation (DNN train accuracy = 100 %) first at step(s): {memo}")
    out.info(f"{len(res.rows)} rows → {output}" + (f", plot → {plot}" if plot else "") + f" ({elapsed:.1f}s)")
