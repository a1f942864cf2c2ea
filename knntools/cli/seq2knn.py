"""``knntools seq2knn``: train a kNN-mimicking sequence-to-sequence or memory network (Xu & Klabjan)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, InputFile, Json, OutputPath, Quiet, Seed, Verbose
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
rows each, read batch by batch from the HDF5 file (the paper's Algorithm 1). Features are
standardised with the training rows' mean and std. A --val-size fraction is held out to pick the
best epoch (macro F1). With --eval the model is scored on a test file beside plain kNN and a
feed-forward net trained with the same budget (full mode) or kNN on one B-row batch (out-of-core).

Reads: TRAIN — a `features` file or an `activations` file (--layer, default penultimate):
features/layers, labels (activations: labels_clean is the ground truth for --eval).
Writes: -o checkpoint .pt (torch.load(weights_only=True): model name, sizes, classes, hyper-parameters,
scaler, state_dict, the standardised training rows for the memory/1-NN: all of them, --label-bank N
random ones, or at most 4096 random ones out-of-core); --predictions: a
`predictions` file for --eval (predictions, scores = Y^P, step_labels [N, K], labels, ids).
"""

EPILOG = """Examples:

  knntools seq2knn train.h5 --model v2vsls -K 5 --epochs 30 -o seq.pt --eval test.h5 --json

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
    K: Annotated[int, typer.Option("-K", "-k", "--n-neighbors", min=1, help="K: neighbours predicted (decoder steps / memory hops).", rich_help_panel=PANEL_MODEL)] = 5,
    layer: Annotated[str, typer.Option("--layer", help="Activations files: the layer to use (a name or 'penultimate'). Ignored for features files.")] = "penultimate",
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

    import numpy as np

    from knntools.errors import InputError
    from knntools.io.h5 import KFile, atomic_path, check_output_path
    from knntools.methods import seq2knn as s2k

    out = Output("seq2knn", json_mode=json_, quiet=quiet, verbose=verbose)
    name = s2k.check_model_name(model)
    check_output_path(output, force)
    if predictions is not None:
        if eval_file is None:
            raise InputError("--predictions: expected --eval TEST.h5 (predictions are written for the test file)")
        check_output_path(predictions, force)
        if Path(predictions).resolve() == Path(output).resolve():
            raise InputError(f"--predictions {predictions}: same path as -o; expected two different files")
    if out_of_core and batch_size <= K:
        raise InputError(f"--batch-size {batch_size}: the out-of-core batch B must exceed K={K}")

    import torch

    from knntools.cli._search_options import search_params
    from knntools.utils import resolve_device, seed_everything

    seed_everything(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    dev = resolve_device(device)
    params = search_params(backend, num_threads=num_threads or None, seed=seed, device=device if backend == "exact" else None)

    kf = KFile(train, ("features", "activations"))
    kt = None
    try:
        lname = kf.resolve_layers("features" if kf.kind == "features" else layer)[0]
        ds = kf.layer(lname)
        D = kf.layer_dim(lname)
        y_all = kf.read_labels("labels")
        C = kf.n_classes or int(y_all.max()) + 1
        N = len(y_all)
        if kf.kind == "features" and kf.has("synthetic"):
            pass  # oversampled files train like any other
        if N < 3:
            raise InputError(f"{train}: {N} samples; expected at least 3")
        # validation split (stratified when every class has >= 2 samples)
        rng = np.random.default_rng(seed)
        all_rows = np.arange(N, dtype=np.int64)
        if val_size > 0:
            from sklearn.model_selection import train_test_split

            counts = np.bincount(y_all, minlength=C)
            strat = y_all if counts[counts > 0].min() >= 2 else None
            n_val = max(1, int(round(val_size * N)))
            if n_val >= N - 1:
                raise InputError(f"--val-size {val_size}: leaves {N - n_val} training samples; expected more")
            tr_rows, va_rows = train_test_split(all_rows, test_size=n_val, stratify=strat, random_state=seed)
            tr_rows, va_rows = np.sort(tr_rows), np.sort(va_rows)
        else:
            tr_rows, va_rows = all_rows, all_rows[:0]
        if K >= len(tr_rows):
            raise InputError(f"{train}: -K {K} is not smaller than the {len(tr_rows)} training samples (after the validation split); expected K < {len(tr_rows)}")
        # test file: validate before heavy work
        y_test = None
        if eval_file is not None:
            kt = KFile(eval_file, kf.kind)
            tl = kt.resolve_layers("features" if kt.kind == "features" else lname)[0]
            if kt.layer_dim(tl) != D:
                raise InputError(f"{eval_file}: {tl} has {kt.layer_dim(tl)} features but {train} has {D}; expected the same width")
            if kf.classes and kt.classes and kf.classes != kt.classes:
                raise InputError(f"{eval_file}: classes {kt.classes} differ from {train}'s {kf.classes}; expected the same classes")
            y_test = kt.truth_labels()
        # scaler (streams the training rows; checks they are finite)
        t0 = time.perf_counter()
        if standardize:
            mean, std = s2k.stream_moments(ds, tr_rows)
            scaler = s2k.Standardizer(mean, std)
        else:
            scaler = s2k.Standardizer.identity(D)
        if out_of_core:
            Xv = s2k.RowView(ds, scaler)  # rows read from disk per batch
        else:
            Xv = scaler(kf.read_layer(lname))
        out.info(f"[bold]seq2knn[/bold] {name} on {train} ({lname}: {N} rows × {D}, {C} classes; "
                 f"{len(tr_rows)} train / {len(va_rows)} val) — kNN targets: "
                 + (f"out-of-core R={batches} × B={batch_size}" if out_of_core else f"full {backend}/{metric}"))
        # kNN targets for the training rows (positions index tr_rows)
        t_nb = time.perf_counter()
        if out_of_core:
            _, nb_rows = s2k.out_of_core_neighbors(ds, K, batches=batches, batch_size=batch_size, metric=metric, pool=tr_rows,
                                                   transform=scaler, random_state=rng, include_query=include_query)
        else:
            _, nb_pos = s2k.full_neighbors(Xv[tr_rows], K, backend=backend, metric=metric, **params)
            nb_rows = tr_rows[nb_pos]
        knn_seconds = time.perf_counter() - t_nb
        agree = float((y_all[nb_rows] == y_all[tr_rows][:, None]).mean())
        out.detail(f"kNN targets in {knn_seconds:.2f}s; neighbour label agreement {agree:.3f}")
        val = (np.asarray(Xv[va_rows]), y_all[va_rows]) if len(va_rows) else None
        hyper = {"K": K, "hidden": hidden, "tau": tau, "lam": lam, "alpha": alpha, "lr": lr, "dropout": dropout, "epochs": epochs,
                 "train_batch_size": train_batch_size, "memory_size": memory_size, "val_size": val_size, "out_of_core": out_of_core,
                 "batches": batches, "batch_size": batch_size, "backend": backend, "metric": metric, "standardize": standardize,
                 "label_bank": label_bank, "memory_labels": memory_labels, "attention_scale": attention_scale, "memory_draws": memory_draws,
                 "include_query": include_query}

        def log(row: dict) -> None:
            out.detail(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

        with out.progress(f"train {name}", total=epochs) as advance:
            def cb(row: dict) -> None:
                log(row)
                advance(1, loss=row["loss"], **({"val_f1": row["val_f1"]} if "val_f1" in row else {}))

            res = s2k.train_model(name, Xv, y_all, C, neighbors=nb_rows, train_rows=tr_rows, val=val, K=K, hidden=hidden, tau=tau, lam=lam,
                                  alpha=alpha, lr=lr, dropout=dropout, epochs=epochs, batch_size=train_batch_size, memory_size=memory_size,
                                  label_bank=label_bank, memory_labels=memory_labels, attention_scale=attention_scale, memory_draws=memory_draws,
                                  backend=backend, metric=metric, search_params=params, device=dev, random_state=rng, callback=cb)
        train_seconds = res.seconds
        summary: dict = {
            "command": "seq2knn", "output": str(output), "model": name, "K": K, "mode": "out-of-core" if out_of_core else "full",
            "train": str(train), "layer": lname, "n_train": int(len(tr_rows)), "n_val": int(len(va_rows)), "n_features": D, "n_classes": C,
            "best_epoch": res.best_epoch, "val_f1": res.best_val_f1, "knn_target_seconds": round(knn_seconds, 3),
            "train_seconds": round(train_seconds, 3), "neighbor_label_agreement": agree, "seed": seed, "hyper": hyper,
        }
        # evaluation
        if eval_file is not None and kt is not None and y_test is not None:
            tl = kt.resolve_layers("features" if kt.kind == "features" else lname)[0]
            Xt = s2k.RowView(kt.layer(tl), scaler) if out_of_core else scaler(kt.read_layer(tl))
            Xt_arr = np.asarray(Xt[np.arange(len(y_test))]) if out_of_core else Xt
            pr = s2k.predict(res.model, Xt_arr, name=name, memory=res.bank, memory_size=memory_size, memory_draws=memory_draws,
                             reference=res.reference, device=dev, random_state=seed)
            tests = {name: {"macro_f1": s2k.macro_f1(y_test, pr["predictions"], C), "accuracy": float((pr["predictions"] == y_test).mean())}}
            if baselines:
                if out_of_core:
                    pk = s2k.knn_predict_batch(Xv, y_all, tr_rows, Xt_arr, C, K, batch_size=batch_size, metric=metric, random_state=seed)
                    tests["knn-batch"] = {"macro_f1": s2k.macro_f1(y_test, pk, C), "accuracy": float((pk == y_test).mean())}
                else:
                    pk = s2k.knn_predict(Xv[tr_rows], y_all[tr_rows], Xt_arr, C, K, backend=backend, metric=metric, **params)
                    tests["knn"] = {"macro_f1": s2k.macro_f1(y_test, pk, C), "accuracy": float((pk == y_test).mean())}
                    ff = s2k.train_model("ffn", Xv, y_all, C, train_rows=tr_rows, val=val, hidden=hidden, lr=lr, dropout=dropout, epochs=epochs,
                                         batch_size=train_batch_size, device=dev, random_state=seed)
                    pf = s2k.predict(ff.model, Xt_arr, name="ffn", device=dev)["predictions"]
                    tests["ffn"] = {"macro_f1": s2k.macro_f1(y_test, pf, C), "accuracy": float((pf == y_test).mean())}
            summary["eval"] = str(eval_file)
            summary["n_test"] = int(len(y_test))
            summary["test"] = tests
            out.table(f"test {eval_file} (K={K}, {summary['mode']})", ["method", "macro_f1", "accuracy"],
                      [(m, v["macro_f1"], v["accuracy"]) for m, v in tests.items()])
        bank_X, bank_y = res.bank  # type: ignore[misc]
        if not isinstance(bank_X, np.ndarray):  # out-of-core: the checkpoint keeps at most CHECKPOINT_BANK_ROWS of them
            keep = np.arange(len(bank_y)) if len(bank_y) <= s2k.CHECKPOINT_BANK_ROWS else np.sort(rng.choice(len(bank_y), s2k.CHECKPOINT_BANK_ROWS, replace=False))
            bank_X, bank_y = bank_X[keep], bank_y[keep]
        ck = s2k.checkpoint_dict(res.model, name=name, n_features=D, n_classes=C, classes=kf.classes or [str(i) for i in range(C)], hyper=hyper,
                                 scaler=scaler, memory=(bank_X, bank_y),
                                 provenance={"train": str(train), "train_uuid": kf.uuid, "layer": lname, "kind": kf.kind, "seed": seed,
                                             "best_epoch": res.best_epoch, "val_f1": res.best_val_f1, "history": res.history})
        with atomic_path(output, force=force) as tmp:
            torch.save(ck, tmp)
        outputs = [str(output)]
        if predictions is not None and kt is not None:
            from knntools.io.kinds import write_predictions

            ids = kt.ids()
            extras = {"step_labels": pr["step_labels"]} if "step_labels" in pr else {}
            write_predictions(predictions, method=f"seq2knn-{name}", predictions=pr["predictions"], scores=pr["scores"], ids=ids, labels=y_test,
                              classes=kt.classes or kf.classes, extras=extras, params=hyper, metrics=summary.get("test", {}).get(name, {}),
                              attrs={"scores_meaning": "Y^P: mean of the K step label distributions (v2vs: vote fractions of the predicted vectors' 1-NN labels)",
                                     "layer": lname, "model_checkpoint": str(output)},
                              parents=[kf.uuid, kt.uuid], seed=seed, force=force)
            outputs.append(str(predictions))
            summary["predictions"] = str(predictions)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
    finally:
        kf.close()
        if kt is not None:
            kt.close()
    out.info(f"{name}: best epoch {res.best_epoch}, val macro F1 {res.best_val_f1:.4f}; kNN targets {knn_seconds:.1f}s + training {train_seconds:.1f}s → {output}")
    out.result(summary, outputs)
