"""``knntools distill-knet``: distil kNN on a network's embedding into a tiny network (kNet), and evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, Json, NumThreads, OptOutputPath, Quiet, Seed, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Ef, EfConstruction, HnswM, IndexPath, Metric

HELP = """Distil kNN on a network's embedding into a tiny network (kNet), or evaluate a kNet.

Two forms, told apart by the first argument. An activations file trains a kNet (Mizrahi & Avidan,
Table 1: FC(d+1 → d/16) · ReLU · BN · FC(d/16 → L) · softmax; k enters as the input feature k / K,
K = the top of --k-range) on the normalised votes of each training sample's k nearest other
training samples' labels in --layer, with k drawn uniformly from --k-range per sample (or
--fixed-k), and writes a .pt checkpoint. A .pt checkpoint evaluates that kNet on --eval FILE for
every k in --k, beside the preliminary network and plain kNN at the same k (paper Tables 2–5) and
the kNet-vs-kNN distance of the output distributions (Figure 3), and writes a predictions file with -o.

Reads: activations (layers/<layer>, labels, labels_clean, logits, ids; kind activations or features).
Writes: training: a kNet checkpoint (torch.load(weights_only=True)-loadable dict);
evaluation: predictions (predictions, scores = kNet output at --predict-k, ids, labels,
dnn_predictions, knet_predictions_k<K>, knn_predictions_k<K>), optional --plot PNG.
"""

EPILOG = """Examples:

  knntools distill-knet train_noisy.h5 --layer penultimate --k-range 1:101 --epochs 30 -o knet.pt

  knntools distill-knet train_noisy.h5 --layer penultimate --fixed-k 1 -o knet_k1.pt

  knntools distill-knet knet.pt --eval test.h5 --k 1,11,51,101 -o knet_pred.h5 --json

  knntools distill-knet knet.pt --eval test.h5 --curve-k 1:101:5 --plot fig3.png
"""

NO_ARGS_IS_HELP = True

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def _input_form(path: Path) -> str:
    """``"activations"`` for an HDF5 file, ``"checkpoint"`` for a torch checkpoint (zip or legacy pickle)."""
    from knntools.errors import InputError

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected an activations .h5 file or a kNet .pt checkpoint")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(HDF5_MAGIC):
        return "activations"
    if head.startswith(ZIP_MAGIC) or path.suffix.lower() in (".pt", ".pth"):
        return "checkpoint"
    raise InputError(f"{path}: neither an HDF5 activations file nor a .pt checkpoint; expected `knntools embed` output or a kNet checkpoint from `knntools distill-knet`")


def _parse_ks(text: str, option: str) -> list[int]:
    """``1,11,51`` or ``LOW:HIGH[:STEP]`` (inclusive) into sorted unique ks >= 1."""
    from knntools.errors import InputError
    from knntools.utils import parse_int_list

    text = str(text).strip()
    if ":" in text:
        parts = text.split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"{option} {text!r}: expected LOW:HIGH[:STEP] integers, e.g. 1:101:5") from None
        if len(nums) not in (2, 3) or nums[0] > nums[1] or (len(nums) == 3 and nums[2] < 1):
            raise InputError(f"{option} {text!r}: expected LOW:HIGH[:STEP] with LOW <= HIGH and STEP >= 1")
        ks = list(range(nums[0], nums[1] + 1, nums[2] if len(nums) == 3 else 1))
        if ks[-1] != nums[1]:
            ks.append(nums[1])
    else:
        ks = parse_int_list(text, option)
    if min(ks) < 1:
        raise InputError(f"{option} {text!r}: k must be >= 1")
    return sorted(set(ks))


@handle_errors("distill-knet")
def distill_knet_cli(
    input: Annotated[Path, typer.Argument(help="Training activations (.h5) to distil, or a kNet checkpoint (.pt) to evaluate.", dir_okay=False)],
    output: OptOutputPath = None,
    layer: Annotated[str, typer.Option("--layer", help="Embedding layer kNN and kNet work on (a name, or 'penultimate').", rich_help_panel="Training")] = "penultimate",
    k_range: Annotated[str, typer.Option("--k-range", help="LOW:HIGH: k drawn uniformly per sample in this inclusive range (paper: 1:101).", rich_help_panel="Training")] = "1:101",
    fixed_k: Annotated[Optional[int], typer.Option("--fixed-k", min=1, help="Train a fixed kNet: every sample uses this k (overrides --k-range).", rich_help_panel="Training")] = None,
    hidden: Annotated[Optional[int], typer.Option("--hidden", min=1, help="Hidden width h (Table 1: d/16, rounded up).", rich_help_panel="Training")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.", rich_help_panel="Training")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Samples per batch.", rich_help_panel="Training")] = 128,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.", rich_help_panel="Training")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0, help="Adam weight decay.", rich_help_panel="Training")] = 0.0,
    include_self: Annotated[bool, typer.Option("--include-self", help="Count each training sample as its own first neighbour when building targets (default: excluded, its k nearest *other* samples vote).", rich_help_panel="Training")] = False,
    eval_file: Annotated[Optional[Path], typer.Option("--eval", help="Evaluation form: activations file to evaluate the checkpoint on.", dir_okay=False, rich_help_panel="Evaluation")] = None,
    train: Annotated[Optional[Path], typer.Option("--train", help="Training activations for plain kNN (default: the path recorded in the checkpoint; its uuid must match).", dir_okay=False, rich_help_panel="Evaluation")] = None,
    ks: Annotated[str, typer.Option("--k", help="ks to evaluate: list 1,11,51,101 or LOW:HIGH[:STEP].", rich_help_panel="Evaluation")] = "1,11,51,101",
    predict_k: Annotated[Optional[int], typer.Option("--predict-k", min=1, help="k of the written predictions/scores (default: the fixed k, else the middle of the training range, 51 for 1:101).", rich_help_panel="Evaluation")] = None,
    curve_k: Annotated[Optional[str], typer.Option("--curve-k", help="ks of the kNet-vs-kNN approximation curve (Figure 3; default: --k).", rich_help_panel="Evaluation")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write Figure 3 (approximation vs k) as PNG.", dir_okay=False, rich_help_panel="Evaluation")] = None,
    no_knn: Annotated[bool, typer.Option("--no-knn", help="Skip plain kNN (no training activations needed).", rich_help_panel="Evaluation")] = False,
    backend: Backend = "exact",
    metric: Metric = "l2",
    index: IndexPath = None,
    M: HnswM = None,
    ef_construction: EfConstruction = None,
    ef: Ef = None,
    num_threads: NumThreads = 0,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    from knntools.errors import InputError

    out = Output("distill-knet", json_mode=json_, quiet=quiet, verbose=verbose)
    form = _input_form(input)
    common = dict(backend=backend, metric=metric, index=index, M=M, ef_construction=ef_construction, ef=ef,
                  num_threads=num_threads, seed=seed, device=device, force=force, out=out)
    if form == "activations":
        given = [flag for flag, v in (("--eval", eval_file), ("--train", train), ("--predict-k", predict_k),
                                      ("--curve-k", curve_k), ("--plot", plot)) if v is not None] + (["--no-knn"] if no_knn else [])
        if given:
            raise InputError(f"{', '.join(given)}: evaluation options need a kNet checkpoint as first argument "
                             f"(got activations {input}); train first, then `knntools distill-knet KNET.pt --eval TEST.h5`")
        if output is None:
            raise InputError("-o/--output: required when training; expected a checkpoint path such as knet.pt")
        _train(input, output, layer=layer, k_range=k_range, fixed_k=fixed_k, hidden=hidden, epochs=epochs,
               batch_size=batch_size, lr=lr, weight_decay=weight_decay, include_self=include_self, **common)
    else:
        if eval_file is None:
            raise InputError(f"{input}: a kNet checkpoint needs --eval ACTIVATIONS.h5 (the file to evaluate / apply it to)")
        _evaluate(input, eval_file, output, train=train, ks_text=ks, predict_k=predict_k, curve_k=curve_k, plot=plot,
                  no_knn=no_knn, layer_option=layer, **common)


# --------------------------------------------------------------------------------------------
# Training form
# --------------------------------------------------------------------------------------------


def _search_index(X: Any, kf: Any, layer: str, *, backend: str, metric: str, index: Path | None, params: dict, out: Output) -> Any:
    """A fitted index over ``X`` (the rows of ``kf``'s ``layer``): loaded from ``--index`` (checked) or built."""
    from knntools.search import fit_index, load_index

    if index is not None:
        idx = load_index(index, expected={"source_uuid": kf.uuid, "layer": layer, "metric": metric, "n_samples": int(len(X))})
        out.detail(f"reusing index {index} ({idx.backend})")
        return idx
    return fit_index(backend, X, metric=metric, **params)


def _train(input: Path, output: Path, *, layer: str, k_range: str, fixed_k: int | None, hidden: int | None, epochs: int,
           batch_size: int, lr: float, weight_decay: float, include_self: bool, backend: str, metric: str, index: Path | None,
           M: int | None, ef_construction: int | None, ef: int | None, num_threads: int, seed: int, device: str, force: bool,
           out: Output) -> None:
    import time

    import torch

    from knntools import __version__
    from knntools.cli._search_options import search_params
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, atomic_path, check_output_path, utc_now
    from knntools.methods import knet as kn
    from knntools.utils import parse_range, resolve_device

    check_output_path(output, force)
    dev = resolve_device(device)
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads or None, seed=seed,
                           device=device)
    with KFile(input, kind=("activations", "features")) as kf:
        names = kf.resolve_layers(layer)
        if len(names) != 1:
            raise InputError(f"--layer {layer!r}: kNet works on one layer; expected a single name or 'penultimate'")
        lname = names[0]
        n = kf.n_samples
        range_lo, range_hi = parse_range(k_range, "--k-range")
        if range_lo < 1:
            raise InputError(f"--k-range {k_range}: expected LOW >= 1")
        lo, hi = (fixed_k, fixed_k) if fixed_k is not None else (range_lo, range_hi)
        kn.check_k_range(lo, hi, n, include_self=include_self, option="--fixed-k" if fixed_k is not None else "--k-range")
        y = kf.read_labels("labels")
        C = kf.n_classes or int(y.max()) + 1
        if C < 2:
            raise InputError(f"{input}: labels: {C} class; expected at least 2 classes")
        d = kf.layer_dim(lname)
        X = kf.read_layer(lname)  # float32, finite-checked (NaN -> exit 2)
        t0 = time.perf_counter()
        idx = _search_index(X, kf, lname, backend=backend, metric=metric, index=index, params=params, out=out)
        nb = kn.training_neighbors(idx, hi, include_self=include_self)
        t_search = time.perf_counter() - t0
        cum = kn.cumulative_votes(kn.neighbor_labels_from_indices(nb, y), C)
        out.info(f"[bold]distill-knet[/bold] {input} layer {lname} (d={d}, n={n}, {C} classes): "
                 f"{hi} neighbours per sample in {t_search:.1f} s ({backend}, {metric})")
        with out.progress("training kNet", total=epochs) as advance:
            fit = kn.fit_knet(X, cum, k_range=(range_lo, range_hi), fixed_k=fixed_k, k_scale=float(range_hi), hidden=hidden, epochs=epochs, batch_size=batch_size,
                              lr=lr, weight_decay=weight_decay, seed=seed, device=dev,
                              callback=lambda e, loss: advance(1, loss=loss))
        model = fit.model
        with torch.no_grad():
            train_acc = kn.accuracy(kn.predict_proba(model, X, hi if fixed_k is None else fixed_k).argmax(1), y)
        mem = kn.memory_footprint(model, n, d)
        meta = {
            "source_path": str(input.resolve()), "source_uuid": kf.uuid, "model_uuid": kf.attrs.get("model_uuid"),
            "model_arch": kf.attrs.get("model_arch"), "dataset": kf.attrs.get("dataset"), "split": kf.attrs.get("split"),
            "layer": lname, "layer_requested": layer, "d": d, "classes": list(kf.classes) or [str(c) for c in range(C)],
            "n_train": n, "label_dataset": "labels", "k_encoding": kn.K_ENCODING, "k_scale": float(range_hi), "k_range": [lo, hi], "k_max": hi,
            "fixed_k": fixed_k, "hidden": model.hidden, "include_self": bool(include_self), "backend": backend, "metric": metric,
            "search_params": params, "train": fit.params, "losses": fit.losses, "train_seconds": fit.seconds,
            "search_seconds": t_search, "memory": mem, "created": utc_now(), "knntools_version": __version__,
        }
    ckpt = kn.to_checkpoint(model, meta)
    with atomic_path(output, force=force) as tmp:
        torch.save(ckpt, tmp)
    kind = f"fixed kNet (k={fixed_k})" if fixed_k is not None else f"kNet (k ~ U[{lo}, {hi}])"
    out.info(f"{kind}: h={model.hidden}, {mem['knet_parameters']} parameters vs {mem['knn_parameters']} stored values for kNN; "
             f"{epochs} epochs in {fit.seconds:.1f} s, final loss {fit.losses[-1]:.4f} → {output}")
    out.result({
        "command": "distill-knet", "mode": "train", "output": str(output), "input": str(input), "layer": lname, "d": d,
        "n_train": n, "n_classes": C, "hidden": model.hidden, "k_range": [lo, hi], "fixed_k": fixed_k, "k_encoding": kn.K_ENCODING,
        "include_self": bool(include_self), "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
        "backend": backend, "metric": metric, "losses": fit.losses, "final_loss": fit.losses[-1],
        "train_accuracy_vs_labels": train_acc, "search_seconds": t_search, "train_seconds": fit.seconds, "memory": mem,
        "n_parameters": mem["knet_parameters"],
    }, output)


# --------------------------------------------------------------------------------------------
# Evaluation form
# --------------------------------------------------------------------------------------------


def _load_checkpoint(path: Path) -> tuple[Any, dict]:
    import torch

    from knntools.errors import InputError
    from knntools.methods import knet as kn

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, damaged zip, not a torch file at all
        from knntools.models.checkpoint import load_error_reason

        raise InputError(f"{path}: not a loadable kNet checkpoint: {load_error_reason(exc)}; expected a file written by `knntools distill-knet`") from None
    return kn.from_checkpoint(obj, str(path))


def _check_eval_file(kf: Any, meta: dict, d: int, ckpt: Path) -> str:
    """The checkpoint's layer in ``kf``, checked for presence, width, model and classes."""
    from knntools.errors import InputError

    lname = str(meta.get("layer") or "penultimate")
    if lname == "penultimate":
        lname = kf.penultimate
    kf.layer_path(lname)  # raises InputError naming the available layers
    width = kf.layer_dim(lname)
    if width != d:
        raise InputError(f"{kf.path}: layer '{lname}' has {width} features but {ckpt} was distilled on d={d}; expected activations of the same model")
    mu, mk = kf.attrs.get("model_uuid"), meta.get("model_uuid")
    if mu and mk and mu != mk:
        raise InputError(f"{kf.path}: model_uuid {mu} differs from {ckpt}'s {mk}; expected activations of the model kNet was distilled on")
    classes = meta.get("classes") or []
    if kf.classes and classes and list(kf.classes) != list(classes):
        raise InputError(f"{kf.path}: classes {kf.classes} differ from {ckpt}'s {classes}; expected the same classes")
    return lname


def _evaluate(ckpt: Path, eval_file: Path, output: Path | None, *, train: Path | None, ks_text: str, predict_k: int | None,
              curve_k: str | None, plot: Path | None, no_knn: bool, layer_option: str, backend: str, metric: str,
              index: Path | None, M: int | None, ef_construction: int | None, ef: int | None, num_threads: int, seed: int,
              device: str, force: bool, out: Output) -> None:
    import time

    import numpy as np

    from knntools.cli._search_options import search_params
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, atomic_path, check_output_path
    from knntools.io.kinds import write_predictions
    from knntools.methods import knet as kn
    from knntools.utils import resolve_device

    if output is not None:
        check_output_path(output, force)
    if plot is not None:
        check_output_path(plot, force)
        if output is not None and Path(plot).resolve() == Path(output).resolve():
            raise InputError(f"--plot {plot}: same path as -o; expected two different files")
    if train is not None and no_knn:
        raise InputError("--train and --no-knn: contradictory; drop one")
    eval_ks = _parse_ks(ks_text, "--k")
    curve_ks = _parse_ks(curve_k, "--curve-k") if curve_k is not None else list(eval_ks)
    dev = resolve_device(device)
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads or None, seed=seed,
                           device=device)
    model, meta = _load_checkpoint(ckpt)
    d, C = model.d, model.n_classes
    lo, hi = (int(v) for v in (meta.get("k_range") or [1, int(model.k_scale)]))
    fixed = meta.get("fixed_k")
    if predict_k is None:
        predict_k = int(fixed) if fixed is not None else (lo + hi) // 2
    if layer_option not in ("penultimate", meta.get("layer"), meta.get("layer_requested")):
        raise InputError(f"--layer {layer_option!r}: {ckpt} was distilled on layer '{meta.get('layer')}'; drop --layer or pass that name")

    kf = KFile(eval_file, kind=("activations", "features"))
    trf = None
    try:
        lname = _check_eval_file(kf, meta, d, ckpt)
        # training activations for plain kNN
        if not no_knn:
            tpath = train
            if tpath is None and meta.get("source_path"):
                cand = Path(str(meta["source_path"]))
                if cand.exists():
                    tpath = cand
                else:
                    out.warn(f"training activations {cand} (recorded in {ckpt}) not found; skipping plain kNN (pass --train FILE)")
            if tpath is not None:
                trf = KFile(tpath, kind=("activations", "features"))
                if meta.get("source_uuid") and trf.uuid != meta["source_uuid"]:
                    raise InputError(f"{tpath}: uuid {trf.uuid} differs from the source_uuid {meta['source_uuid']} recorded in {ckpt}; expected the activations kNet was distilled from")
                trf.layer_path(lname)
                if trf.layer_dim(lname) != d:
                    raise InputError(f"{tpath}: layer '{lname}' has {trf.layer_dim(lname)} features; expected {d}")
                top = max(max(eval_ks), max(curve_ks), predict_k)
                if top > trf.n_samples:
                    raise InputError(f"--k/--curve-k: k={top} exceeds the {trf.n_samples} training samples of {tpath}; expected k <= {trf.n_samples}")
        X = kf.read_layer(lname)  # NaN -> exit 2
        y_true = kf.truth_labels()
        ids = kf.ids()
        dnn_pred = kf.read("logits").argmax(axis=1).astype(np.int64) if kf.has("logits") else None
        dnn_acc = kn.accuracy(dnn_pred, y_true) if dnn_pred is not None else None

        outside = sorted(k for k in set(eval_ks) | set(curve_ks) | {predict_k} if not lo <= k <= hi)
        if outside and fixed is None:
            out.warn(f"k = {', '.join(map(str, outside))} outside the training range {lo}:{hi} of {ckpt}: kNet extrapolates there")
        elif outside:
            out.info(f"fixed kNet trained at k={fixed} only: other ks enter as the input k / {model.k_scale:g} it never saw in training")
        nl_test = None
        t_search = 0.0
        if trf is not None:
            Xtr = trf.read_layer(lname)
            ytr = trf.read_labels("labels")
            t0 = time.perf_counter()
            idx = _search_index(Xtr, trf, lname, backend=backend, metric=metric, index=index, params=params, out=out)
            _, nb = idx.kneighbors(X, max(max(eval_ks), max(curve_ks), predict_k))  # every k voted below
            t_search = time.perf_counter() - t0
            nl_test = kn.neighbor_labels_from_indices(nb, ytr)
            del Xtr
        t0 = time.perf_counter()
        all_ks = sorted(set(eval_ks) | set(curve_ks) | {predict_k})
        p_knet = {k: kn.predict_proba(model, X, k, device=dev) for k in all_ks}
        t_knet = (time.perf_counter() - t0) / len(all_ks)
        acc_rows, approx_rows, extras = [], [], {}
        if dnn_pred is not None:
            extras["dnn_predictions"] = dnn_pred
        for k in all_ks:
            knet_pred = p_knet[k].argmax(axis=1).astype(np.int64)
            row: dict[str, Any] = {"k": k, "knet_accuracy": kn.accuracy(knet_pred, y_true), "knn_accuracy": None}
            p_knn = None
            if nl_test is not None:
                p_knn, knn_pred = kn.knn_vote(nl_test, k, C)
                row["knn_accuracy"] = kn.accuracy(knn_pred, y_true)
            if k in eval_ks:
                acc_rows.append(row)
                extras[f"knet_predictions_k{k}"] = knet_pred
                if p_knn is not None:
                    extras[f"knn_predictions_k{k}"] = knn_pred
            if k in curve_ks and p_knn is not None:
                approx_rows.append({"k": k, **kn.approximation_stats(p_knet[k], p_knn)})
        mem = dict(meta.get("memory") or {})
        mem.setdefault("knet_parameters", model.n_parameters())
        n_train = int(meta.get("n_train") or (trf.n_samples if trf is not None else 0))
        mem.setdefault("knn_parameters", n_train * d)
        label = "fixed kNet" if fixed is not None else "kNet"
        final_pred = p_knet[predict_k].argmax(axis=1).astype(np.int64)
        metrics = {
            "dnn_accuracy": dnn_acc, "knet_accuracy": kn.accuracy(final_pred, y_true), "predict_k": predict_k,
            "accuracy": acc_rows, "approximation": approx_rows,
            "best_knn": max((r for r in acc_rows if r["knn_accuracy"] is not None), key=lambda r: r["knn_accuracy"], default=None),
            "best_knet": max(acc_rows, key=lambda r: r["knet_accuracy"]),
        }
        out.info(f"[bold]distill-knet[/bold] {ckpt} on {eval_file} layer {lname} ({len(X)} samples, truth: "
                 f"{kf.truth_name})")
        header = ["method", "parameters", *[f"k={r['k']}" for r in acc_rows]]
        rows = []
        if dnn_acc is not None:
            rows.append(["network", "-", *[dnn_acc for _ in acc_rows]])
        if nl_test is not None:
            rows.append(["+ kNN", f"+{mem['knn_parameters']}", *[r["knn_accuracy"] for r in acc_rows]])
        rows.append([f"+ {label}", f"+{mem['knet_parameters']}", *[r["knet_accuracy"] for r in acc_rows]])
        out.table("test accuracy (paper Tables 2–5)", header, rows)
        if approx_rows:
            out.table("kNet vs kNN output distributions (paper Figure 3)", ["k", "mean |diff|", "max kNN", "max kNet", "agree"],
                      [(r["k"], r["mad"], r["max_knn"], r["max_knet"], r["agreement"]) for r in approx_rows])
        fig = None
        if plot is not None and approx_rows:  # build the figure before writing anything
            from knntools.plotting.knet import plot_approximation

            fig = plot_approximation(approx_rows, title=f"{label} vs kNN on {Path(eval_file).name} ({lname})")
        written = []
        if output is not None:
            write_predictions(
                output, method="knet", predictions=final_pred, scores=p_knet[predict_k], ids=ids, labels=y_true,
                classes=meta.get("classes") or kf.classes, extras=extras,
                params={"checkpoint": str(ckpt), "layer": lname, "k": predict_k, "ks": eval_ks, "k_range": [lo, hi],
                        "fixed_k": fixed, "hidden": model.hidden, "k_encoding": meta.get("k_encoding"), "backend": backend,
                        "metric": metric, "source_uuid": meta.get("source_uuid"), "train": str(trf.path) if trf is not None else None},
                metrics=metrics,
                attrs={"scores_meaning": f"kNet softmax output at k={predict_k}: predicted normalised kNN vote vector"},
                parents=[kf.uuid] + ([trf.uuid] if trf is not None else []), seed=seed, force=force,
            )
            written.append(output)
        if fig is not None:
            with atomic_path(plot, force=force) as tmp:
                fig.savefig(tmp, format="png", dpi=120)
            written.append(plot)
        elif plot is not None:
            out.warn("--plot: no kNN neighbours (kNN skipped), so no approximation curve to draw; nothing plotted")
    finally:
        kf.close()
        if trf is not None:
            trf.close()
    out.result({
        "command": "distill-knet", "mode": "eval", "output": str(output) if output is not None else None,
        "plot": str(plot) if plot is not None and approx_rows else None, "checkpoint": str(ckpt), "eval": str(eval_file),
        "train": str(trf.path) if trf is not None else None, "layer": lname, "n_samples": int(len(X)), "method": label,
        "hidden": model.hidden, "k_range": [lo, hi], "fixed_k": fixed, "memory": mem, "search_seconds": t_search,
        "knet_seconds_per_k": t_knet, **metrics,
    }, written or None)
