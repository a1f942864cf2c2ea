"""``knntools seq2knn``: train a kNN-mimicking sequence-to-sequence or memory network (Xu & Klabjan)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, InputFile, Json, K, Layer, OutputPath, Quiet, Seed, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Metric

HELP = """Train a model that mimics K-nearest neighbours: it predicts the labels and/or feature vectors of
a sample's K nearest training samples, and a final label (Xu & Klabjan, seq2seq and memory-network kNN).

Models: v2ls (labels of the K neighbours), v2vs (their vectors; label = vote of the labels of the
vectors' nearest training rows, searched among every training row with --backend/--metric),
v2vsls (both; the paper's best), mnknn and mnknn-vec (the paper's memory network: K hops over one
memory of 64 random training samples, c_i = C x_i, p = softmax(uᵀm)). Deviations from the paper
are options, off by default: --label-bank, --memory-labels, --attention-scale, --memory-draws,
--exclude-query (docs/seq2knn.md). kNN targets come from an exact/hnsw search over the whole training set
(--backend, --metric), or with --out-of-core from R = --batches random batches of B = --batch-size
rows each, read from the HDF5 file (the paper's Algorithm 1). -k/--n-neighbors is the paper's K
(-K is deprecated). Features are
standardised with the training rows' mean and std. A --val-size fraction is held out to pick the
best epoch (macro F1). With --eval the model is scored on a test file beside plain kNN and a
feed-forward net trained with the same budget (full mode) or kNN on one B-row batch (out-of-core).

Reads: TRAIN — a `features` file or an `activations` file (--layer, default penultimate; ignored
for features files): features/layers, labels (activations: labels_clean is the ground truth for --eval).
Writes: -o checkpoint .pt (the knntools checkpoint format, kind seq2knn; torch.load(weights_only=True):
model name, sizes, classes, hyper-parameters, scaler, state_dict, the standardised training rows for
the memory/1-NN: all of them, --label-bank N random ones, or at most 4096 random ones out-of-core); --predictions: a
`predictions` file for --eval (predictions, scores = Y^P, step_labels [N, K], labels, ids).
"""

EPILOG = """Examples:

  knntools seq2knn train.h5 --model v2vsls -k 5 --epochs 30 -o seq.pt --eval test.h5 --json

  knntools seq2knn train.h5 --model mnknn-vec --out-of-core --batches 50 --batch-size 64 -o mn.pt --eval test.h5

  knntools seq2knn acts_train.h5 --layer penultimate --model v2ls -o v2ls.pt --eval acts_test.h5 --predictions pred.h5
"""

PANEL_MODEL = "Model and loss (paper defaults)"
PANEL_TRAIN = "Training"
PANEL_OOC = "Out-of-core kNN targets"
PANEL_DEV = "Inference references and documented deviations (old behaviour: --label-bank 4096 --memory-labels --attention-scale --memory-draws 5 --exclude-query)"

@handle_errors("seq2knn")
def seq2knn_cli(
    train: InputFile,
    output: OutputPath,
    model: Annotated[str, typer.Option("--model", help="v2ls | v2vs | v2vsls | mnknn | mnknn-vec", rich_help_panel=PANEL_MODEL)] = "v2vsls",
    k: K = 5,
    layer: Layer = "penultimate",
    tau: Annotated[float, typer.Option("--tau", min=1e-6, help="Softmax temperature of each step's label distribution.", rich_help_panel=PANEL_MODEL)] = 0.85,
    lam: Annotated[float, typer.Option("--lam", min=0.0, help="Weight of the vector loss L2 (v2vsls, mnknn-vec). Oversampling: 1.3.", rich_help_panel=PANEL_MODEL)] = 0.12,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, help="Weight of KL(Y^GT || Y^P) in L1. Oversampling: 3.", rich_help_panel=PANEL_MODEL)] = 9.5,
    hidden: Annotated[int, typer.Option("--hidden", min=1, help="Hidden units of the LSTM / memory embeddings.", rich_help_panel=PANEL_MODEL)] = 64,
    dropout: Annotated[float, typer.Option("--dropout", min=0.0, max=0.95, help="Dropout probability.", rich_help_panel=PANEL_MODEL)] = 0.2,
    memory_size: Annotated[int, typer.Option("--memory-size", min=1, help="MNkNN memory n: random training samples per hop memory.", rich_help_panel=PANEL_MODEL)] = 64,
    memory_labels: Annotated[bool, typer.Option("--memory-labels/--no-memory-labels", help="MNkNN deviation: add a label embedding to the memory values (c_i = C x_i + E y_i). Paper: off.", rich_help_panel=PANEL_DEV)] = False,
    attention_scale: Annotated[bool, typer.Option("--attention-scale/--no-attention-scale", help="MNkNN deviation: attention softmax(uᵀm / √hidden). Paper: off (softmax(uᵀm)).", rich_help_panel=PANEL_DEV)] = False,
    memory_draws: Annotated[int, typer.Option("--memory-draws", min=1, help="MNkNN: random memories averaged per prediction (validation and --eval). Paper: 1.", rich_help_panel=PANEL_DEV)] = 1,
    label_bank: Annotated[int, typer.Option("--label-bank", min=0, help="Reference rows for V2VS labelling and the MNkNN memory pool at validation/--eval: 0 = every training row (paper); N = N random training rows (deviation; 4096 was the former fixed bank).", rich_help_panel=PANEL_DEV)] = 0,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs (the best validation epoch is kept).", rich_help_panel=PANEL_TRAIN)] = 30,
    train_batch_size: Annotated[int, typer.Option("--train-batch-size", min=2, help="Mini-batch size of the optimiser (not B: see --batch-size).", rich_help_panel=PANEL_TRAIN)] = 64,
    lr: Annotated[float, typer.Option("--lr", min=1e-8, help="Adam learning rate.", rich_help_panel=PANEL_TRAIN)] = 0.01,
    val_size: Annotated[float, typer.Option("--val-size", min=0.0, max=0.5, help="Fraction of TRAIN held out (stratified) to choose the best epoch; 0 = last epoch.", rich_help_panel=PANEL_TRAIN)] = 0.1,
    standardize: Annotated[bool, typer.Option("--standardize/--no-standardize", help="Standardise features with the training rows' mean and std.", rich_help_panel=PANEL_TRAIN)] = True,
    out_of_core: Annotated[bool, typer.Option("--out-of-core", help="kNN targets from R random batches of B rows streamed from disk (Algorithm 1) instead of a full search.", rich_help_panel=PANEL_OOC)] = False,
    batches: Annotated[int, typer.Option("--batches", min=1, help="R: random batches per training sample.", rich_help_panel=PANEL_OOC)] = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="B: rows per out-of-core batch (must exceed K).", rich_help_panel=PANEL_OOC)] = 64,
    include_query: Annotated[bool, typer.Option("--include-query/--exclude-query", help="Out-of-core: the sample x is in every sampled set S (paper: 'a subset S from the training set (including x)'), so its first target is itself; --exclude-query never picks x (deviation, like the full targets).", rich_help_panel=PANEL_OOC)] = True,
    backend: Backend = "exact",
    metric: Metric = "l2",
    eval_file: Annotated[Optional[Path], typer.Option("--eval", help="Test file (same kind, layer and width as TRAIN) to score with macro F1 and accuracy.", dir_okay=False)] = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", help="Write a `predictions` file for --eval.", dir_okay=False)] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="With --eval also score kNN and a feed-forward net (full) or kNN on one B-row batch (out-of-core).")] = True,
    seed: Seed = 0,
    device: Device = "auto",
    num_threads: Annotated[int, typer.Option("--num-threads", min=0, help="torch CPU threads (0 = torch's default). 1 is fastest for these small networks.")] = 1,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    import time

    from knntools.cli._knn_options import data_layer, open_eval
    from knntools.io.h5 import KFile
    from knntools.methods import seq2knn as s2k

    out = Output("seq2knn", json_mode=json_, quiet=quiet, verbose=verbose)
    name = s2k.check_model_name(model)
    _check_outputs(output, predictions, eval_file, force)
    dev, params = _torch_setup(backend, device, seed, num_threads)
    t0 = time.perf_counter()
    with KFile(train, ("features", "activations")) as kf, contextlib.ExitStack() as stack:
        lname = data_layer(kf, layer)
        kt, tl = open_eval(stack, eval_file, kf, lname)
        X_test, y_test = (kt.layer(tl), kt.truth_labels()) if kt is not None else (None, None)
        y = kf.read_labels("labels")
        C = kf.n_classes or int(y.max()) + 1
        with out.progress(f"train {name}", total=epochs) as advance:
            def epoch_done(row: dict) -> None:
                out.detail(" ".join(f"{key}={v:.4f}" if isinstance(v, float) else f"{key}={v}" for key, v in row.items()))
                advance(1, loss=row["loss"], **({"val_f1": row["val_f1"]} if "val_f1" in row else {}))

            run = s2k.fit_seq2knn(kf.layer(lname), y, C, model=name, K=k, hidden=hidden, tau=tau, lam=lam, alpha=alpha, lr=lr, dropout=dropout,
                                  epochs=epochs, train_batch_size=train_batch_size, memory_size=memory_size, memory_labels=memory_labels,
                                  attention_scale=attention_scale, memory_draws=memory_draws, label_bank=label_bank, val_size=val_size,
                                  standardize=standardize, out_of_core=out_of_core, batches=batches, batch_size=batch_size,
                                  include_query=include_query, backend=backend, metric=metric, search_params=params, X_test=X_test, y_test=y_test,
                                  baselines=baselines, device=dev, seed=seed, callback=epoch_done,
                                  log=lambda msg: out.info(f"[bold]seq2knn[/bold] {name} on {train} ({lname}): {msg}"))
        out.detail(f"kNN targets in {run.knn_seconds:.2f}s; neighbour label agreement {run.neighbor_label_agreement:.3f}")
        summary = _summary(run, output, train, lname, seed)
        if kt is not None:
            summary.update({"eval": str(eval_file), "n_test": int(len(y_test)), "test": run.test})
            out.table(f"test {eval_file} (K={k}, {summary['mode']})", ["method", "macro_f1", "accuracy"], [(m, v["macro_f1"], v["accuracy"]) for m, v in run.test.items()])
        outputs = _write(run, kf, kt, y_test, train, output, predictions, lname, seed, force)
    if predictions is not None:
        summary["predictions"] = str(predictions)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    res = run.result
    out.info(f"{name}: best epoch {res.best_epoch}, val macro F1 {res.best_val_f1:.4f}; kNN targets {run.knn_seconds:.1f}s + training {res.seconds:.1f}s → {output}")
    out.result(summary, outputs)


def _check_outputs(output: Path, predictions: Optional[Path], eval_file: Optional[Path], force: bool) -> None:
    from knntools.errors import InputError
    from knntools.io.atomic import check_output_path

    check_output_path(output, force)
    if predictions is not None:
        if eval_file is None:
            raise InputError("--predictions: expected --eval TEST.h5 (predictions are written for the test file)")
        check_output_path(predictions, force)
        if Path(predictions).resolve() == Path(output).resolve():
            raise InputError(f"--predictions {predictions}: same path as -o; expected two different files")


def _torch_setup(backend: str, device: str, seed: int, num_threads: int) -> tuple[Any, dict]:
    """Seed, threads, the torch device and the search options (the command's runtime settings)."""
    import torch

    from knntools.cli._search_options import search_params
    from knntools.utils import resolve_device, seed_everything

    seed_everything(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    params = search_params(backend, num_threads=num_threads or None, seed=seed, device=device if backend == "exact" else None)
    return resolve_device(device), params


def _summary(run: Any, output: Path, train: Path, lname: str, seed: int) -> dict:
    res, hyper = run.result, run.hyper
    return {"command": "seq2knn", "output": str(output), "model": run.name, "K": hyper["K"], "mode": "out-of-core" if hyper["out_of_core"] else "full",
            "train": str(train), "layer": lname, "n_train": int(len(run.train_rows)), "n_val": int(len(run.val_rows)),
            "n_features": int(run.scaler.mean.shape[0]), "n_classes": int(res.model.C), "best_epoch": res.best_epoch, "val_f1": res.best_val_f1,
            "knn_target_seconds": round(run.knn_seconds, 3), "train_seconds": round(res.seconds, 3),
            "neighbor_label_agreement": run.neighbor_label_agreement, "seed": seed, "hyper": hyper}


def _write(run: Any, kf: Any, kt: Any, y_test: Any, train: Path, output: Path, predictions: Optional[Path], lname: str, seed: int, force: bool) -> list[str]:
    """Write the checkpoint (and the predictions file) → the paths written."""
    from knntools.models.checkpoint import write_checkpoint

    C = int(run.result.model.C)
    ck = run.checkpoint(classes=kf.classes or [str(i) for i in range(C)],
                        provenance={"train": str(train), "train_uuid": kf.uuid, "layer": lname, "kind": kf.kind, "seed": seed})
    write_checkpoint(ck, output, kind="seq2knn", force=force)
    if predictions is None or kt is None:
        return [str(output)]
    from knntools.io.kinds import write_predictions

    pr = run.test_output
    extras = {"step_labels": pr["step_labels"]} if "step_labels" in pr else {}
    write_predictions(predictions, method=f"seq2knn-{run.name}", predictions=pr["predictions"], scores=pr["scores"], ids=kt.ids(), labels=y_test,
                      classes=kt.classes or kf.classes, extras=extras, params=run.hyper, metrics=run.test.get(run.name, {}),
                      attrs={"scores_meaning": "Y^P: mean of the K step label distributions (v2vs: vote fractions of the predicted vectors' 1-NN labels)",
                             "layer": lname, "model_checkpoint": str(output)},
                      parents=[kf.uuid, kt.uuid], seed=seed, force=force)
    return [str(output), str(predictions)]
