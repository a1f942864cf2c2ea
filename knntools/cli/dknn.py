"""``knntools dknn``: Deep k-Nearest Neighbors with conformal credibility over activation files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, Json, K, Layers, NumThreads, OutputPath, Quiet, Seed, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Ef, EfConstruction, HnswM, Metric, Precision

HELP = """Classify with Deep k-Nearest Neighbors (Papernot & McDaniel 2018) and write p-values, confidence and credibility.

For every layer (default: all hidden layers and the logits) the k nearest training activations of each evaluated sample are found; the nonconformity of label j is the number of those neighbours, over all layers, whose training label is not j. Held-out calibration samples turn it into empirical p-values: prediction = argmax p, confidence = 1 - second largest p, credibility = max p. Calibration: the first --calibration rows of the evaluated file (the paper's 750), a stratified sample (--calibration-mode stratified), or rows of --calibration-file; calibration rows (and, for a calibration file of the same dataset split, rows with the same ids) are not evaluated. Defaults: smoothed p-values (|{a >= alpha}| + 1) / (|A| + 1), every calibration score kept, activations L2-normalised (not centred), exact search; --reference gives the reference implementation's choices. See docs/dknn.md.

Reads: TRAIN layers/<name>, logits, labels (neighbour labels), ids; EVAL and --calibration-file layers/<name>, logits, labels_clean (else labels), ids.

Writes: predictions, scores (p-values [N, C]), confidence, credibility, nonconformity [N, C], dnn_predictions, dnn_confidence, rows, ids, labels, neighbors/<layer>/{ids,labels,distances} [N, k], calibration/{ids,rows,labels,scores}; optional reliability diagram PNG (--plot).
"""

EPILOG = """Examples:

  knntools dknn train.h5 test.h5 -k 75 --calibration 750 -o dknn.h5 --plot reliability.png --json

  knntools dknn train.h5 test_fgsm.h5 -k 75 --calibration-file test.h5 --calibration 750 -o dknn_fgsm.h5

  knntools dknn train.h5 test.h5 --layers conv2,conv3,logits --backend exact -o dknn_exact.h5
"""


def _read_rows(kf, name: str, rows):
    """Rows ``rows`` (sorted int array) of layer ``name`` as float32 [len(rows), d], read in row blocks.

    Streams the layer in blocks and keeps only the wanted rows (h5py fancy indexing with thousands
    of indices is slow, and reading the whole layer first would double the memory).
    """
    import numpy as np

    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # contiguous: one slice
        return kf.read_layer(name, slice(int(rows[0]), int(rows[-1]) + 1))
    d = kf.layer_dim(name)
    out = np.empty((len(rows), d), np.float32)
    step = max(256, (64 << 20) // (4 * max(1, d)))
    pos = 0
    for start, block in kf.iter_rows(kf.layer_path(name), step, dtype=np.float32):
        sel = rows[(rows >= start) & (rows < start + len(block))]
        out[pos : pos + len(sel)] = block.reshape(len(block), -1)[sel - start]
        pos += len(sel)
    return out


@handle_errors("dknn")
def dknn_cli(
    train: Annotated[Path, typer.Argument(metavar="TRAIN", help="Training activations (`knntools embed --split train`); its `labels` are the neighbour labels.", dir_okay=False)],
    evaluate: Annotated[Path, typer.Argument(metavar="EVAL", help="Activations to classify (e.g. the test set or an FGSM test set), same model.", dir_okay=False)],
    output: OutputPath,
    k: K = 75,
    layers: Layers = "all",
    calibration: Annotated[int, typer.Option("--calibration", min=1, help="Calibration set size |A| (held out of the evaluation).")] = 750,
    calibration_mode: Annotated[Literal["first", "stratified"], typer.Option("--calibration-mode", help="Which rows calibrate: the first N, or a class-stratified random sample (--seed).")] = "first",
    calibration_file: Annotated[Optional[Path], typer.Option("--calibration-file", help="Take the calibration rows from this activations file instead of EVAL (e.g. clean test.h5 for an FGSM EVAL).", dir_okay=False)] = None,
    calibrate_on_attacked: Annotated[bool, typer.Option("--calibrate-on-attacked", help="Allow calibrating on rows of EVAL when its provenance records an attack (refused otherwise: the paper calibrates on clean held-out test data).")] = False,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="L2-normalise activations before the search (reference implementation).")] = True,
    center: Annotated[bool, typer.Option("--center/--no-center", help="Subtract the training mean of the (normalised) activations (reference implementation; no effect with --metric l2).")] = False,
    p_value: Annotated[Literal["smoothed", "plain"], typer.Option("--p-value", help="smoothed: (|{a >= alpha}| + 1)/(|A| + 1) (conformal textbook); plain: |{a >= alpha}|/|A| (Algorithm 1, reference code).")] = "smoothed",
    drop_zero_calibration: Annotated[bool, typer.Option("--drop-zero-calibration", help="Drop zero calibration scores, as the reference implementation does.")] = False,
    reference: Annotated[bool, typer.Option("--reference", help="The reference implementation's choices: --p-value plain --drop-zero-calibration --normalize --center (overrides those).")] = False,
    backend: Backend = "exact",
    metric: Metric = "l2",
    index: Annotated[Optional[list[str]], typer.Option("--index", metavar="[LAYER=]PATH", help="Reuse an index saved by `knntools index` for a layer (repeatable; the layer is read from the index when LAYER= is omitted). Refused when built from another file, layer or metric.", rich_help_panel="Neighbour search")] = None,
    M: HnswM = None,
    ef_construction: EfConstruction = None,
    ef: Ef = None,
    num_threads: NumThreads = 0,
    device: Device = "auto",
    precision: Precision = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write reliability diagrams (DNN softmax confidence and DkNN credibility vs accuracy) to this PNG.", dir_okay=False)] = None,
    bins: Annotated[int, typer.Option("--bins", min=1, help="Bins of the reliability diagram.")] = 10,
    seed: Seed = 0,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    import resource
    import time

    import numpy as np

    from knntools.cli._search_options import search_params
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_output_path, check_same_source
    from knntools.methods import dknn as dk

    t_start = time.perf_counter()
    out = Output("dknn", json_mode=json_, quiet=quiet, verbose=verbose)
    if reference:
        p_value, drop_zero_calibration, normalize, center = "plain", True, True, True
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef,
                           num_threads=num_threads or None, seed=seed, device=device, precision=precision)
    plan = dk.search_plan(metric, normalize, center)
    check_output_path(output, force)
    if plot is not None:
        check_output_path(plot, force)
        if plot.resolve() == output.resolve():
            raise InputError(f"--plot {plot}: same path as --output; expected a different file")
    # One-time validation of every input before any heavy work.
    tr = KFile(train, kind="activations")
    ev = KFile(evaluate, kind="activations")
    cf = KFile(calibration_file, kind="activations") if calibration_file is not None else None
    layer_names = tr.resolve_layers(layers)
    check_same_source(tr, ev, layer_names)
    if cf is not None:
        check_same_source(tr, cf, layer_names)
    for kf in (ev, cf):
        if kf is not None and tr.n_classes and kf.n_classes and tr.n_classes != kf.n_classes:
            raise InputError(f"{kf.path}: {kf.n_classes} classes but {tr.path} has {tr.n_classes}; expected the same classes")
    y_train = tr.read_labels("labels")
    n_train = len(y_train)
    n_classes = tr.n_classes or int(y_train.max()) + 1
    truth_name = ev.truth_name
    y_eval_all = ev.read_labels(truth_name)
    ids_eval_all = ev.ids()
    if y_eval_all.size and y_eval_all.max() >= n_classes:
        raise InputError(f"{ev.path}: {truth_name} go up to {y_eval_all.max()}; expected labels in [0, {n_classes}) like {tr.path}")

    # Calibration rows and the evaluated rows.
    n_excluded = 0
    ev_attack = ev.attrs.get("attack")
    if cf is None and ev_attack not in (None, "", "none") and not calibrate_on_attacked:
        raise InputError(f"{ev.path}: attribute attack = {ev_attack!r}: calibrating on adversarial rows is refused (the paper holds out clean "
                         f"test data); expected --calibration-file CLEAN.h5 (or --calibrate-on-attacked to force it)")
    if cf is None:
        if calibration >= ev.n_samples:
            raise InputError(f"{ev.path}: --calibration {calibration} is >= the {ev.n_samples} rows of the evaluated file; "
                             f"expected fewer (calibration rows are held out of the evaluation)")
        cal_rows = dk.select_calibration(y_eval_all, calibration, calibration_mode, n_classes=n_classes, random_state=seed)
        mask = np.ones(ev.n_samples, bool)
        mask[cal_rows] = False
        eval_rows = np.flatnonzero(mask)
        cal_truth_name = truth_name
        y_cal = y_eval_all[cal_rows]
        ids_cal = ids_eval_all[cal_rows]
        cal_source = str(ev.path)
    else:
        cal_truth_name = cf.truth_name
        y_cal_all = cf.read_labels(cal_truth_name)
        if calibration > cf.n_samples:
            raise InputError(f"{cf.path}: --calibration {calibration} is larger than its {cf.n_samples} rows; expected at most {cf.n_samples}")
        cal_rows = dk.select_calibration(y_cal_all, calibration, calibration_mode, n_classes=n_classes, random_state=seed)
        y_cal = y_cal_all[cal_rows]
        ids_cal_all = cf.ids()
        ids_cal = ids_cal_all[cal_rows]
        same_split = cf.uuid == ev.uuid or (
            cf.attrs.get("dataset") is not None and cf.attrs.get("dataset") == ev.attrs.get("dataset")
            and cf.attrs.get("split") is not None and cf.attrs.get("split") == ev.attrs.get("split"))
        mask = ~np.isin(ids_eval_all, ids_cal) if same_split else np.ones(ev.n_samples, bool)
        eval_rows = np.flatnonzero(mask)
        n_excluded = int(ev.n_samples - len(eval_rows))
        cal_source = str(cf.path)
    if len(eval_rows) == 0:
        raise InputError(f"{ev.path}: no rows left to evaluate after holding out the {calibration} calibration samples; expected a larger file or a smaller --calibration")
    if truth_name != "labels_clean" or cal_truth_name != "labels_clean":
        out.detail(f"ground truth: {truth_name} of {ev.path}" + (f", {cal_truth_name} of {cf.path}" if cf is not None else ""))

    # Prebuilt indexes: validate the headers now, load them after all validation.
    index_paths: dict[str, Path] = {}
    if index:
        from knntools.search import read_index_header
        from knntools.search.registry import check_index_matches

        for spec in index:
            layer_given, _, path_text = spec.partition("=") if "=" in spec else ("", "", spec)
            ipath = Path(path_text)
            head = read_index_header(ipath)
            layer_name = layer_given or (head.get("metadata") or {}).get("layer")
            if not layer_name:
                raise InputError(f"--index {spec}: the index does not record its layer; expected LAYER=PATH")
            if layer_name not in layer_names:
                raise InputError(f"--index {spec}: layer '{layer_name}' is not among the searched layers ({', '.join(layer_names)})")
            if plan.materialize:
                raise InputError(f"--index {spec}: prebuilt indexes hold raw activations, but --center with --metric {metric} searches transformed ones; drop --index or --center")
            expected = {"source_uuid": tr.uuid, "layer": layer_name, "metric": plan.metric, "n_samples": n_train}
            if head.get("metric") != plan.metric:
                why = " (--normalize with --metric l2 searches the raw activations by cosine)" if plan.distance == "cos_to_l2" else ""
                raise InputError(f"{ipath}: index metric is {head.get('metric')!r} but dknn searches {layer_name} with {plan.metric!r}{why}; "
                                 f"rebuild it with `knntools index {tr.path} --layers {layer_name} --metric {plan.metric}` or change --normalize/--metric")
            check_index_matches(ipath, head, expected)
            index_paths[layer_name] = ipath

    out.info(f"[bold]dknn[/bold] k={k} on {len(layer_names)} layer(s) {', '.join(layer_names)}: {n_train} training rows, "
             f"{len(eval_rows)} evaluated, {len(cal_rows)} calibration ({calibration_mode} of {cal_source})")

    # Heavy work: one layer at a time.
    from knntools.search import load_index

    if backend == "exact":
        import torch  # noqa: F401  (imported here so its import time is not counted as search time)

    t0 = time.perf_counter()
    prebuilt = {name: load_index(p) for name, p in index_paths.items()}
    t_load_index = time.perf_counter() - t0
    model = dk.DkNN(k, backend=backend, metric=metric, normalize=normalize, center=center, p_value=p_value,
                    drop_zero_calibration=drop_zero_calibration, search_params=params)
    model.fit({name: tr.layer(name) for name in layer_names}, y_train, n_classes=n_classes, indexes=prebuilt, build=False)
    train_ids = tr.ids()
    cal_labels: dict[str, np.ndarray] = {}
    neighbors: dict[str, dict[str, np.ndarray]] = {}
    timing: dict[str, dict[str, float]] = {}
    whole_eval = cf is None  # calibration and evaluated rows together are the whole file: one search
    with out.progress("layers", total=len(layer_names)) as advance:
        for name in layer_names:
            t_read = time.perf_counter()
            Q = ev.read_layer(name) if whole_eval or len(eval_rows) == ev.n_samples else _read_rows(ev, name, eval_rows)
            if not whole_eval:  # calibration rows of the other file join the queries: the training layer is read once
                Qc = _read_rows(cf, name, cal_rows)
                Q = np.concatenate([Q.reshape(len(Q), -1), Qc.reshape(len(Qc), -1)])
                del Qc
            read_s = time.perf_counter() - t_read
            t_s = time.perf_counter()
            dist, rows = model.kneighbors_layer(name, Q)
            search_s = time.perf_counter() - t_s
            del Q
            if whole_eval:
                cal_labels[name] = model.neighbor_labels(rows[cal_rows])
                dist, rows = dist[eval_rows], rows[eval_rows]
            else:
                n_ev = len(eval_rows)
                cal_labels[name] = model.neighbor_labels(rows[n_ev:])
                dist, rows = dist[:n_ev], rows[:n_ev]
            model.release(name)
            neighbors[name] = {"ids": train_ids[rows], "labels": model.neighbor_labels(rows), "distances": dist.astype(np.float32)}
            timing[name] = {"read_s": read_s, "search_s": search_s}
            out.detail(f"{name}: d={tr.layer_dim(name)} read {read_s:.2f} s, search {search_s:.2f} s")
            advance(1, layer=name)

    model.calibrate_from_neighbors(cal_labels, y_cal)
    res = model.predict_from_neighbors({name: neighbors[name]["labels"] for name in layer_names})
    y_eval = y_eval_all[eval_rows]
    correct = res.predictions == y_eval

    dnn_pred = dnn_conf = None
    if ev.has("logits"):
        from knntools.utils import softmax

        logits = ev.read("logits", dtype=np.float32)[eval_rows]
        dnn_pred = logits.argmax(axis=1).astype(np.int64)
        dnn_conf = softmax(logits).max(axis=1)
    dnn_correct = None if dnn_pred is None else dnn_pred == y_eval

    def mean_or_none(a: np.ndarray) -> float | None:
        return float(a.mean()) if a.size else None

    metrics = {
        "accuracy": float(correct.mean()),
        "dnn_accuracy": None if dnn_correct is None else float(dnn_correct.mean()),
        "mean_credibility": float(res.credibility.mean()),
        "mean_credibility_correct": mean_or_none(res.credibility[correct]),
        "mean_credibility_wrong": mean_or_none(res.credibility[~correct]),
        "mean_confidence": float(res.confidence.mean()),
        "dnn_mean_softmax_confidence": None if dnn_conf is None else float(dnn_conf.mean()),
        "agreement_with_dnn": None if dnn_pred is None else float((dnn_pred == res.predictions).mean()),
        "n_evaluated": int(len(eval_rows)),
        "calibration_size": int(len(cal_rows)),
        "calibration_scores_kept": int(len(model.calibration_scores_)),
        "calibration_excluded_from_eval": n_excluded,
    }
    param_attrs = {
        "k": k, "layers": layer_names, "backend": backend, "metric": metric, "search_metric": plan.metric,
        "normalize": normalize, "center": center, "p_value": p_value, "drop_zero_calibration": drop_zero_calibration,
        "calibration": calibration, "calibration_mode": calibration_mode, "calibration_source": cal_source,
        "ground_truth": truth_name, "search_params": params, "indexes": {n: str(p) for n, p in index_paths.items()}, "bins": bins,
    }

    # Outputs, atomically (nothing is left behind on failure).
    import contextlib

    import h5py

    from knntools.io.h5 import atomic_path, write_array
    from knntools.io.kinds import write_predictions

    t_write = time.perf_counter()
    parents = [tr.uuid, ev.uuid] + ([cf.uuid] if cf is not None else [])
    extras = {
        "confidence": res.confidence.astype(np.float32),
        "credibility": res.credibility.astype(np.float32),
        "nonconformity": res.nonconformity.astype(np.int64),
        "rows": eval_rows.astype(np.int64),
    }
    if dnn_pred is not None:
        extras["dnn_predictions"] = dnn_pred
        extras["dnn_confidence"] = dnn_conf.astype(np.float32)
    with contextlib.ExitStack() as stack:
        tmp_h5 = stack.enter_context(atomic_path(output, force=force))
        tmp_png = stack.enter_context(atomic_path(plot, force=force)) if plot is not None else None
        write_predictions(
            tmp_h5, method="dknn", predictions=res.predictions, scores=res.p_values, ids=ids_eval_all[eval_rows], labels=y_eval,
            classes=tr.classes or [str(c) for c in range(n_classes)], extras=extras, neighbors=neighbors,
            params=param_attrs, metrics=metrics, parents=parents, seed=seed,
            attrs={"dataset": ev.attrs.get("dataset"), "split": ev.attrs.get("split"), "model_uuid": ev.attrs.get("model_uuid"),
                   "attack": ev.attrs.get("attack")},
        )
        with h5py.File(tmp_h5, "a") as f:
            f["scores"].attrs["meaning"] = f"conformal p-values p_j(x) ({p_value}) of the DkNN; prediction = argmax"
            for name in layer_names:
                f[f"neighbors/{name}/ids"].attrs["meaning"] = f"ids of the k nearest training samples in {name} ({tr.path})"
                f[f"neighbors/{name}/distances"].attrs["distance_units"] = {"l2": "euclidean", "cosine": "1 - cosine_similarity", "ip": "negative_inner_product"}[metric] + (" of L2-normalised activations" if normalize else "")
            write_array(f, "calibration/ids", ids_cal.astype(np.int64), per_sample=False)
            write_array(f, "calibration/rows", cal_rows.astype(np.int64), per_sample=False, attrs={"file": cal_source})
            write_array(f, "calibration/labels", y_cal.astype(np.int64), per_sample=False)
            write_array(f, "calibration/scores", model.calibration_scores_.astype(np.int64), per_sample=False,
                        attrs={"meaning": "sorted calibration nonconformity scores A (after --drop-zero-calibration when set)"})
        if tmp_png is not None:
            from knntools.plotting.reliability import dknn_panels, reliability_figure

            attack = str(ev.attrs.get("attack") or "none")
            label = Path(evaluate).stem if attack == "none" else f"{attack} ({Path(evaluate).stem})"
            fig = reliability_figure(dknn_panels(credibility=res.credibility, dknn_correct=correct, dnn_confidence=dnn_conf,
                                                 dnn_correct=dnn_correct, label=label), n_bins=bins)
            fig.savefig(tmp_png, format="png", dpi=110)
    write_s = time.perf_counter() - t_write
    total_s = time.perf_counter() - t_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    rows_tab = [(name, tr.layer_dim(name), timing[name]["read_s"], timing[name]["search_s"]) for name in layer_names]
    out.table("per-layer timing (s)", ["layer", "dim", "read", "search"], rows_tab)
    acc_txt = f"DkNN accuracy {metrics['accuracy']:.4f}" + (f", DNN {metrics['dnn_accuracy']:.4f}" if dnn_correct is not None else "")
    cw = metrics["mean_credibility_wrong"]
    out.info(f"{acc_txt}; mean credibility {metrics['mean_credibility']:.4f} (correct {metrics['mean_credibility_correct'] or float('nan'):.4f}, "
             f"wrong {cw if cw is not None else float('nan'):.4f}); calibration |A| = {metrics['calibration_scores_kept']}; "
             f"{total_s:.1f} s, peak RSS {peak_mb:.0f} MB → {output}")
    search_total = float(sum(t["search_s"] for t in timing.values()))
    out.result({
        "command": "dknn", "output": str(output), "plot": str(plot) if plot is not None else None,
        **metrics, "n_train": n_train, "n_classes": n_classes, "k": k, "layers": layer_names, "backend": backend, "metric": metric,
        "normalize": normalize, "center": center, "p_value": p_value, "drop_zero_calibration": drop_zero_calibration,
        "calibration_mode": calibration_mode, "calibration_source": cal_source, "seed": seed,
        "timing_s": {"total": total_s, "search": search_total, "read": float(sum(t["read_s"] for t in timing.values())),
                     "load_index": t_load_index, "write": write_s, "per_layer": timing},
        "peak_rss_mb": peak_mb,
    }, [output] + ([plot] if plot is not None else []))
