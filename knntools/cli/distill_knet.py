"""``knntools distill-knet``: distil kNN on a network's embedding into a tiny network (kNet), and evaluate it.

The command parses, reads the files, calls the core (:func:`knntools.methods.knet.distill`,
:func:`~knntools.methods.knet.select_k`, :func:`~knntools.methods.knet.evaluate`), writes through
:mod:`knntools.io` / :mod:`knntools.models.checkpoint` and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import K, Device, Force, Json, KSweep, Layer, NumThreads, OptOutputPath, Quiet, Seed, SelectOn, ValFraction, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Ef, EfConstruction, HnswM, IndexPath, Metric

HELP = """Distil kNN on a network's embedding into a tiny network (kNet), or evaluate a kNet.

Two forms, told apart by the first argument. An activations file trains a kNet (Mizrahi & Avidan,
Table 1: FC(d+1 → d/16) · ReLU · BN · FC(d/16 → L) · softmax; k enters as the input feature k / K,
K = the top of --k-range) on the normalised votes of each training sample's k nearest other
training samples' labels in --layer, with k drawn uniformly from --k-range per sample, or one k
for all with -k (the paper's fixed kNet), and writes a .pt checkpoint. A .pt checkpoint evaluates
that kNet on --eval FILE for every k in --k-sweep, beside the preliminary network and plain kNN at
the same k (paper Tables 2–5) and the kNet-vs-kNN distance of the output distributions (Figure 3),
and writes a predictions file with -o at -k (default: the fixed k, else the middle of the range).

Choosing k: the table reports test accuracy at every k, so picking its best column reads the test
labels. --select-on validation picks k from --k-sweep on a stratified --val-fraction of the
training rows instead (a kNet is retrained without them with the checkpoint's settings; --seed
draws them) and predicts at that k; the JSON's selection gives the chosen k and its test accuracy.

Reads: activations (layers/<layer>, labels, labels_clean, logits, ids; kind activations or features).
Writes: training: a kNet checkpoint (torch.load(weights_only=True)-loadable dict);
evaluation: predictions (predictions, scores = kNet output at -k, ids, labels,
dnn_predictions, knet_predictions_k<K>, knn_predictions_k<K>), optional --plot PNG.
"""

EPILOG = """Examples:

  knntools distill-knet train_noisy.h5 --layer penultimate --k-range 1:101 --epochs 30 -o knet.pt

  knntools distill-knet train_noisy.h5 --layer penultimate -k 1 -o knet_k1.pt

  knntools distill-knet knet.pt --eval test.h5 --k-sweep 1,11,51,101 -o knet_pred.h5 --json

  knntools distill-knet knet.pt --eval test.h5 --k-sweep 1:101:10 --select-on validation --json

  knntools distill-knet knet.pt --eval test.h5 --curve-k 1:101:5 --plot fig3.png
"""

NO_ARGS_IS_HELP = True

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"

#: The shared -k/--n-neighbors option, optional here (training: a fixed kNet; evaluation: the k of the predictions).
OptK = Annotated[Optional[int], typer.Option("-k", "--n-neighbors", help=K.__metadata__[0].help, min=1)]


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


@handle_errors("distill-knet")
def distill_knet_cli(
    input: Annotated[Path, typer.Argument(help="Training activations (.h5) to distil, or a kNet checkpoint (.pt) to evaluate.", dir_okay=False)],
    output: OptOutputPath = None,
    layer: Layer = "penultimate",
    n_neighbors: OptK = None,
    k_range: Annotated[str, typer.Option("--k-range", help="LOW:HIGH: k drawn uniformly per sample in this inclusive range (paper: 1:101).", rich_help_panel="Training")] = "1:101",
    hidden: Annotated[Optional[int], typer.Option("--hidden", min=1, help="Hidden width h (Table 1: d/16, rounded up).", rich_help_panel="Training")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.", rich_help_panel="Training")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Samples per batch.", rich_help_panel="Training")] = 128,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.", rich_help_panel="Training")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0, help="Adam weight decay.", rich_help_panel="Training")] = 0.0,
    include_self: Annotated[bool, typer.Option("--include-self", help="Count each training sample as its own first neighbour when building targets (default: excluded, its k nearest *other* samples vote).", rich_help_panel="Training")] = False,
    eval_file: Annotated[Optional[Path], typer.Option("--eval", help="Evaluation form: activations file to evaluate the checkpoint on.", dir_okay=False, rich_help_panel="Evaluation")] = None,
    train: Annotated[Optional[Path], typer.Option("--train", help="Training activations for plain kNN (default: the path recorded in the checkpoint; its uuid must match).", dir_okay=False, rich_help_panel="Evaluation")] = None,
    k_sweep: KSweep = "1,11,51,101",
    curve_k: Annotated[Optional[str], typer.Option("--curve-k", help="ks of the kNet-vs-kNN approximation curve (Figure 3; default: --k-sweep).", rich_help_panel="Evaluation")] = None,
    select_k: SelectOn = "none",
    val_fraction: ValFraction = 0.1,
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
    from knntools.cli._search_options import search_params
    from knntools.errors import InputError

    out = Output("distill-knet", json_mode=json_, quiet=quiet, verbose=verbose)
    form = _input_form(input)
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads or None, seed=seed,
                           device=device)
    common = dict(layer=layer, n_neighbors=n_neighbors, backend=backend, metric=metric, index=index, params=params,
                  seed=seed, device=device, force=force, out=out)
    if form == "activations":
        given = [flag for flag, v in (("--eval", eval_file), ("--train", train), ("--curve-k", curve_k), ("--plot", plot))
                 if v is not None] + (["--no-knn"] if no_knn else []) + (["--select-on"] if select_k != "none" else [])
        if given:
            raise InputError(f"{', '.join(given)}: evaluation options need a kNet checkpoint as first argument "
                             f"(got activations {input}); train first, then `knntools distill-knet KNET.pt --eval TEST.h5`")
        if output is None:
            raise InputError("-o/--output: required when training; expected a checkpoint path such as knet.pt")
        _train(input, output, k_range=k_range, hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, include_self=include_self, **common)
    else:
        if eval_file is None:
            raise InputError(f"{input}: a kNet checkpoint needs --eval ACTIVATIONS.h5 (the file to evaluate / apply it to)")
        if train is not None and no_knn:
            raise InputError("--train and --no-knn: contradictory; drop one")
        if select_k == "validation" and no_knn:
            raise InputError("--select-on validation and --no-knn: the choice of k needs the training activations; drop --no-knn")
        if select_k == "validation" and not 0.0 < val_fraction < 1.0:
            raise InputError(f"--val-fraction {val_fraction}: expected a share strictly between 0 and 1")
        _evaluate(input, eval_file, output, train=train, k_sweep=k_sweep, curve_k=curve_k, plot=plot, no_knn=no_knn,
                  select_k=select_k, val_fraction=val_fraction, **common)


def _search_index(X: Any, kf: Any, layer: str, *, metric: str, index: Path, out: Output) -> Any:
    """The index saved at ``--index``, checked against the rows of ``kf``'s ``layer``."""
    from knntools.search import load_index

    idx = load_index(index, expected={"source_uuid": kf.uuid, "layer": layer, "metric": metric, "n_samples": int(len(X))})
    out.detail(f"reusing index {index} ({idx.backend})")
    return idx


# --------------------------------------------------------------------------------------------
# Training form
# --------------------------------------------------------------------------------------------


def _train(input: Path, output: Path, *, layer: str, n_neighbors: int | None, k_range: str, hidden: int | None, epochs: int,
           batch_size: int, lr: float, weight_decay: float, include_self: bool, backend: str, metric: str, index: Path | None,
           params: dict, seed: int, device: str, force: bool, out: Output) -> None:
    import time

    from knntools import __version__
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_output_path, utc_now
    from knntools.methods import knet as kn
    from knntools.models.checkpoint import write_checkpoint
    from knntools.utils import parse_range, resolve_device

    check_output_path(output, force)
    dev = resolve_device(device)
    range_lo, range_hi = parse_range(k_range, "--k-range")
    with KFile(input, kind=("activations", "features")) as kf:
        lname = kf.resolve_layers(layer, single=True)[0]
        y = kf.read_labels("labels")
        X = kf.read_layer(lname)  # float32, finite-checked (NaN -> exit 2)
        t0 = time.perf_counter()
        idx = _search_index(X, kf, lname, metric=metric, index=index, out=out) if index is not None else None
        t_load = time.perf_counter() - t0
        with out.progress("training kNet", total=epochs) as advance:
            try:
                res = kn.distill(X, y, n_classes=kf.n_classes or None, k_range=(range_lo, range_hi), fixed_k=n_neighbors,
                                 include_self=include_self, index=idx, backend=backend, metric=metric, search_params=params,
                                 hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                 seed=seed, device=dev, callback=lambda e, loss: advance(1, loss=loss))
            except InputError as exc:
                raise InputError(f"{input}: {exc}") from None
        t_search = t_load + res.search_seconds
        lo, hi = res.k_range
        meta = {
            "source_path": str(input.resolve()), "source_uuid": kf.uuid, "model_uuid": kf.attrs.get("model_uuid"),
            "model_arch": kf.attrs.get("model_arch"), "dataset": kf.attrs.get("dataset"), "split": kf.attrs.get("split"),
            "layer": lname, "layer_requested": layer, "d": res.d, "classes": list(kf.classes) or [str(c) for c in range(res.n_classes)],
            "n_train": res.n_train, "label_dataset": "labels", "k_encoding": kn.K_ENCODING, "k_scale": res.k_scale,
            "k_range": [lo, hi], "k_max": hi, "fixed_k": res.fixed_k, "hidden": res.model.hidden, "include_self": bool(include_self),
            "backend": backend, "metric": metric, "search_params": params, "train": res.fit.params, "losses": res.fit.losses,
            "train_seconds": res.fit.seconds, "search_seconds": t_search, "memory": res.memory, "created": utc_now(),
            "knntools_version": __version__,
        }
    write_checkpoint(kn.to_checkpoint(res.model, meta), output, kind="knet", force=force)
    mem, losses = res.memory, res.fit.losses
    kind = f"fixed kNet (k={res.fixed_k})" if res.fixed_k is not None else f"kNet (k ~ U[{lo}, {hi}])"
    out.info(f"[bold]distill-knet[/bold] {input} layer {lname} (d={res.d}, n={res.n_train}, {res.n_classes} classes): "
             f"{hi} neighbours per sample in {t_search:.1f} s ({backend}, {metric})")
    out.info(f"{kind}: h={res.model.hidden}, {mem['knet_parameters']} parameters vs {mem['knn_parameters']} stored values for kNN; "
             f"{epochs} epochs in {res.fit.seconds:.1f} s, final loss {losses[-1]:.4f} → {output}")
    out.result({
        "command": "distill-knet", "mode": "train", "output": str(output), "input": str(input), "layer": lname, "d": res.d,
        "n_train": res.n_train, "n_classes": res.n_classes, "hidden": res.model.hidden, "k_range": [lo, hi], "fixed_k": res.fixed_k,
        "k_encoding": kn.K_ENCODING, "include_self": bool(include_self), "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "seed": seed, "backend": backend, "metric": metric, "losses": losses, "final_loss": losses[-1],
        "train_accuracy_vs_labels": res.train_accuracy, "search_seconds": t_search, "train_seconds": res.fit.seconds,
        "memory": mem, "n_parameters": mem["knet_parameters"],
    }, output)


# --------------------------------------------------------------------------------------------
# Evaluation form
# --------------------------------------------------------------------------------------------


def _check_eval_file(kf: Any, meta: dict, d: int, ckpt: Path, layer_option: str) -> str:
    """The checkpoint's layer in ``kf``, checked against ``--layer``, for presence, width, model and classes."""
    from knntools.errors import InputError

    lname = kf.resolve_layers(str(meta.get("layer") or "penultimate"), single=True)[0]
    if layer_option != "penultimate" and kf.resolve_layers(layer_option, single=True)[0] != lname:  # the default is the checkpoint's layer
        raise InputError(f"--layer {layer_option!r}: {ckpt} was distilled on layer '{meta.get('layer')}'; drop --layer or pass that name")
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


def _open_train(train: Path | None, ckpt: Path, meta: dict, lname: str, d: int, out: Output) -> Any:
    """The training activations for plain kNN (``--train``, else the path recorded in the checkpoint), checked; or None."""
    from knntools.errors import InputError
    from knntools.io.h5 import KFile

    tpath = train
    if tpath is None and meta.get("source_path"):
        cand = Path(str(meta["source_path"]))
        if cand.exists():
            tpath = cand
        else:
            out.warn(f"training activations {cand} (recorded in {ckpt}) not found; skipping plain kNN (pass --train FILE)")
    if tpath is None:
        return None
    trf = KFile(tpath, kind=("activations", "features"))
    try:
        if meta.get("source_uuid") and trf.uuid != meta["source_uuid"]:
            raise InputError(f"{tpath}: uuid {trf.uuid} differs from the source_uuid {meta['source_uuid']} recorded in {ckpt}; expected the activations kNet was distilled from")
        trf.layer_path(lname)
        if trf.layer_dim(lname) != d:
            raise InputError(f"{tpath}: layer '{lname}' has {trf.layer_dim(lname)} features; expected {d}")
    except BaseException:
        trf.close()
        raise
    return trf


def _evaluate(ckpt: Path, eval_file: Path, output: Path | None, *, train: Path | None, k_sweep: str, n_neighbors: int | None,
              curve_k: str | None, plot: Path | None, no_knn: bool, select_k: str, val_fraction: float, layer: str, backend: str,
              metric: str, index: Path | None, params: dict, seed: int, device: str, force: bool, out: Output) -> None:
    import time
    from contextlib import ExitStack

    import numpy as np

    from knntools.cli._options import parse_k_list
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_output_path
    from knntools.methods import knet as kn
    from knntools.utils import resolve_device

    for path in (output, plot):
        if path is not None:
            check_output_path(path, force)
    if plot is not None and output is not None and Path(plot).resolve() == Path(output).resolve():
        raise InputError(f"--plot {plot}: same path as -o; expected two different files")
    eval_ks = parse_k_list(k_sweep, "--k-sweep")
    curve_ks = parse_k_list(curve_k, "--curve-k") if curve_k is not None else None
    dev = resolve_device(device)
    model, meta = kn.from_checkpoint(ckpt)
    k_range = tuple(int(v) for v in (meta.get("k_range") or [1, int(model.k_scale)]))
    with ExitStack() as stack:
        kf = stack.enter_context(KFile(eval_file, kind=("activations", "features")))
        lname = _check_eval_file(kf, meta, model.d, ckpt, layer)
        trf = None if no_knn else _open_train(train, ckpt, meta, lname, model.d, out)
        if trf is not None:
            stack.callback(trf.close)
        elif select_k == "validation":
            raise InputError(f"--select-on validation: needs the training activations {ckpt} was distilled from; pass --train FILE")
        X = kf.read_layer(lname)  # NaN -> exit 2
        dnn_pred = kf.read("logits").argmax(axis=1).astype(np.int64) if kf.has("logits") else None
        Xtr = ytr = idx = None
        t0 = time.perf_counter()
        if trf is not None:
            Xtr, ytr = trf.read_layer(lname), trf.read_labels("labels")
            idx = _search_index(Xtr, trf, lname, metric=metric, index=index, out=out) if index is not None else None
        t_index = time.perf_counter() - t0 if idx is not None else 0.0
        sel = None
        if select_k == "validation":
            if meta.get("metric") not in (None, metric):
                out.warn(f"--metric {metric}: {ckpt} was distilled with {meta['metric']}; the choice of k retrains it with {metric}")
            sel = kn.select_k(Xtr, ytr, eval_ks, val_fraction=val_fraction, seed=seed, n_classes=model.n_classes, backend=backend,
                              metric=metric, search_params=params, device=dev, **kn.training_settings(model, meta))
        res = kn.evaluate(model, X, kf.truth_labels(), eval_ks, curve_ks=curve_ks, predict_k=n_neighbors, train_X=Xtr,
                          train_labels=ytr, index=idx, backend=backend, metric=metric, search_params=params,
                          dnn_predictions=dnn_pred, k_range=k_range, fixed_k=meta.get("fixed_k"), selection=sel, device=dev)
        res.search_seconds += t_index
        info = {"ckpt": ckpt, "eval": eval_file, "layer": lname, "truth": kf.truth_name, "n": len(X), "knn": trf is not None,
                "k_range": k_range, "fixed_k": meta.get("fixed_k"), "memory": _memory(meta, model, trf), "model": model}
        _report_eval(out, res, info)
        written = _write_eval(output, plot, res, info, meta=meta, kf=kf, trf=trf, backend=backend, metric=metric,
                              select=(select_k, val_fraction), seed=seed, force=force, out=out)
    label = "fixed kNet" if meta.get("fixed_k") is not None else "kNet"
    out.result({
        "command": "distill-knet", "mode": "eval", "output": str(output) if output is not None else None,
        "plot": str(plot) if plot is not None and res.metrics["approximation"] else None, "checkpoint": str(ckpt),
        "eval": str(eval_file), "train": str(trf.path) if trf is not None else None, "layer": lname, "n_samples": int(len(X)),
        "method": label, "hidden": model.hidden, "k_range": list(k_range), "fixed_k": meta.get("fixed_k"), "memory": info["memory"],
        "search_seconds": res.search_seconds, "knet_seconds_per_k": res.knet_seconds_per_k, **res.metrics,
    }, written or None)


def _memory(meta: dict, model: Any, trf: Any) -> dict:
    """kNet's parameters vs kNN's stored values, as recorded at training (filled in for older checkpoints)."""
    mem = dict(meta.get("memory") or {})
    mem.setdefault("knet_parameters", model.n_parameters())
    n_train = int(meta.get("n_train") or (trf.n_samples if trf is not None else 0))
    mem.setdefault("knn_parameters", n_train * model.d)
    return mem


def _report_eval(out: Output, res: Any, info: dict) -> None:
    """Messages and tables on stderr: extrapolated ks, accuracy per k (Tables 2–5), Figure 3 numbers, the chosen k."""
    lo, hi = info["k_range"]
    fixed, metrics, mem = info["fixed_k"], res.metrics, info["memory"]
    if res.outside and fixed is None:
        out.warn(f"k = {', '.join(map(str, res.outside))} outside the training range {lo}:{hi} of {info['ckpt']}: kNet extrapolates there")
    elif res.outside:
        out.info(f"fixed kNet trained at k={fixed} only: other ks enter as the input k / {info['model'].k_scale:g} it never saw in training")
    out.info(f"[bold]distill-knet[/bold] {info['ckpt']} on {info['eval']} layer {info['layer']} ({info['n']} samples, truth: {info['truth']})")
    acc_rows = metrics["accuracy"]
    header = ["method", "parameters", *[f"k={r['k']}" for r in acc_rows]]
    rows = []
    if metrics["dnn_accuracy"] is not None:
        rows.append(["network", "-", *[metrics["dnn_accuracy"] for _ in acc_rows]])
    if info["knn"]:
        rows.append(["+ kNN", f"+{mem['knn_parameters']}", *[r["knn_accuracy"] for r in acc_rows]])
    label = "fixed kNet" if fixed is not None else "kNet"
    rows.append([f"+ {label}", f"+{mem['knet_parameters']}", *[r["knet_accuracy"] for r in acc_rows]])
    out.table("test accuracy (paper Tables 2–5)", header, rows)
    if metrics["approximation"]:
        out.table("kNet vs kNN output distributions (paper Figure 3)", ["k", "mean |diff|", "max kNN", "max kNet", "agree"],
                  [(r["k"], r["mad"], r["max_knn"], r["max_knet"], r["agreement"]) for r in metrics["approximation"]])
    sel = metrics.get("selection")
    if sel is not None:
        out.info(f"k chosen on {sel['n_val']} held-out training rows (validation accuracy, never the test labels): "
                 f"kNet k={sel['k']} (test accuracy {sel['knet_test_accuracy']:.4f}), kNN k={sel['knn_k']}")


def _write_eval(output: Path | None, plot: Path | None, res: Any, info: dict, *, meta: dict, kf: Any, trf: Any, backend: str,
                metric: str, select: tuple, seed: int, force: bool, out: Output) -> list:
    """Write the predictions file (-o) and the Figure 3 PNG (--plot); returns the paths written."""
    from knntools.io.h5 import atomic_path
    from knntools.io.kinds import write_predictions

    label = "fixed kNet" if info["fixed_k"] is not None else "kNet"
    approx = res.metrics["approximation"]
    fig = None
    if plot is not None and approx:  # build the figure before writing anything
        from knntools.plotting.knet import plot_approximation

        fig = plot_approximation(approx, title=f"{label} vs kNN on {Path(info['eval']).name} ({info['layer']})")
    written = []
    if output is not None:
        k = res.metrics["predict_k"]
        chosen = {"select_on": select[0], "val_fraction": select[1]} if select[0] != "none" else {}
        write_predictions(
            output, method="knet", predictions=res.predictions, scores=res.scores, ids=kf.ids(), labels=kf.truth_labels(),
            classes=meta.get("classes") or kf.classes, extras=res.extras,
            params={"checkpoint": str(info["ckpt"]), "layer": info["layer"], "k": k, "ks": res.ks, "k_range": list(info["k_range"]),
                    "fixed_k": info["fixed_k"], "hidden": info["model"].hidden, "k_encoding": meta.get("k_encoding"),
                    "backend": backend, "metric": metric, "source_uuid": meta.get("source_uuid"),
                    "train": str(trf.path) if trf is not None else None, **chosen},
            metrics=res.metrics, attrs={"scores_meaning": f"kNet softmax output at k={k}: predicted normalised kNN vote vector"},
            parents=[kf.uuid] + ([trf.uuid] if trf is not None else []), seed=seed, force=force,
        )
        written.append(output)
    if fig is not None:
        with atomic_path(plot, force=force) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        written.append(plot)
    elif plot is not None:
        out.warn("--plot: no kNN neighbours (kNN skipped), so no approximation curve to draw; nothing plotted")
    return written
