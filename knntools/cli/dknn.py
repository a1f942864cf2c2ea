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
    import contextlib
    import time

    from knntools.cli._search_options import search_params
    from knntools.io.h5 import KFile
    from knntools.methods import dknn as dk

    t_start = time.perf_counter()
    out = Output("dknn", json_mode=json_, quiet=quiet, verbose=verbose)
    if reference:
        p_value, drop_zero_calibration, normalize, center = "plain", True, True, True
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef,
                           num_threads=num_threads or None, seed=seed, device=device, precision=precision)
    dk.search_plan(metric, normalize, center)  # validates the metric before any file is read
    _check_outputs(output, plot, force)
    with contextlib.ExitStack() as stack:
        tr, ev = KFile(train, kind="activations"), KFile(evaluate, kind="activations")
        cf = KFile(calibration_file, kind="activations") if calibration_file is not None else None
        progress: dict = {}

        def on_start(run: "dk.DkNNRun") -> None:
            _report_start(out, run, k, calibration_mode, tr, ev, cf)
            progress["advance"] = stack.enter_context(out.progress("layers", total=len(run.layers)))

        def on_layer(name: str, t: dict) -> None:
            out.detail(f"{name}: d={tr.layer_dim(name)} read {t['read_s']:.2f} s, search {t['search_s']:.2f} s")
            progress["advance"](1, layer=name)

        run = dk.run_dknn(tr, ev, calibration_file=cf, layers=layers, k=k, calibration=calibration, calibration_mode=calibration_mode,
                          calibrate_on_attacked=calibrate_on_attacked, backend=backend, metric=metric, normalize=normalize, center=center,
                          p_value=p_value, drop_zero_calibration=drop_zero_calibration, search_params=params, indexes=index or (),
                          seed=seed, on_start=on_start, on_layer=on_layer)
    config = {"k": k, "backend": backend, "metric": metric, "normalize": normalize, "center": center, "p_value": p_value,
              "drop_zero_calibration": drop_zero_calibration, "calibration": calibration, "calibration_mode": calibration_mode,
              "search_params": params, "bins": bins, "seed": seed}
    t_write = time.perf_counter()
    _write(run, config, output, plot, force, tr, ev, cf, evaluate)
    _report_end(out, run, config, output, plot, tr, time.perf_counter() - t_write, time.perf_counter() - t_start)


def _check_outputs(output: Path, plot: Optional[Path], force: bool) -> None:
    from knntools.errors import InputError
    from knntools.io.h5 import check_output_path

    check_output_path(output, force)
    if plot is not None:
        check_output_path(plot, force)
        if plot.resolve() == output.resolve():
            raise InputError(f"--plot {plot}: same path as --output; expected a different file")


def _report_start(out: Output, run, k: int, calibration_mode: str, tr, ev, cf) -> None:
    if run.truth_name != "labels_clean" or run.calibration_truth_name != "labels_clean":
        out.detail(f"ground truth: {run.truth_name} of {ev.path}" + (f", {run.calibration_truth_name} of {cf.path}" if cf is not None else ""))
    out.info(f"[bold]dknn[/bold] k={k} on {len(run.layers)} layer(s) {', '.join(run.layers)}: {run.n_train} training rows, "
             f"{len(run.split.eval_rows)} evaluated, {len(run.split.rows)} calibration ({calibration_mode} of {run.calibration_source})")


def _write(run, config: dict, output: Path, plot: Optional[Path], force: bool, tr, ev, cf, evaluate: Path) -> None:
    """The predictions file (and the reliability PNG), atomically: nothing is left behind on failure."""
    import contextlib

    import h5py
    import numpy as np

    from knntools.io.h5 import atomic_path, write_array
    from knntools.io.kinds import write_predictions

    res, split, metric = run.result, run.split, config["metric"]
    params = {"k": config["k"], "layers": run.layers, "backend": config["backend"], "metric": metric, "search_metric": run.search_metric,
              "normalize": config["normalize"], "center": config["center"], "p_value": config["p_value"],
              "drop_zero_calibration": config["drop_zero_calibration"], "calibration": config["calibration"],
              "calibration_mode": config["calibration_mode"], "calibration_source": run.calibration_source, "ground_truth": run.truth_name,
              "search_params": config["search_params"], "indexes": {n: str(p) for n, p in run.index_paths.items()}, "bins": config["bins"]}
    extras = {"confidence": res.confidence.astype(np.float32), "credibility": res.credibility.astype(np.float32),
              "nonconformity": res.nonconformity.astype(np.int64), "rows": split.eval_rows.astype(np.int64)}
    if run.dnn_predictions is not None:
        extras["dnn_predictions"] = run.dnn_predictions
        extras["dnn_confidence"] = run.dnn_confidence.astype(np.float32)
    units = {"l2": "euclidean", "cosine": "1 - cosine_similarity", "ip": "negative_inner_product"}[metric] + (" of L2-normalised activations" if config["normalize"] else "")
    with contextlib.ExitStack() as stack:
        tmp_h5 = stack.enter_context(atomic_path(output, force=force))
        tmp_png = stack.enter_context(atomic_path(plot, force=force)) if plot is not None else None
        write_predictions(
            tmp_h5, method="dknn", predictions=res.predictions, scores=res.p_values, ids=run.eval_ids, labels=run.eval_labels,
            classes=run.classes, extras=extras, neighbors=run.neighbors, params=params, metrics=run.metrics,
            parents=[tr.uuid, ev.uuid] + ([cf.uuid] if cf is not None else []), seed=config["seed"],
            attrs={"dataset": ev.attrs.get("dataset"), "split": ev.attrs.get("split"), "model_uuid": ev.attrs.get("model_uuid"), "attack": ev.attrs.get("attack")},
        )
        with h5py.File(tmp_h5, "a") as f:
            f["scores"].attrs["meaning"] = f"conformal p-values p_j(x) ({config['p_value']}) of the DkNN; prediction = argmax"
            for name in run.layers:
                f[f"neighbors/{name}/ids"].attrs["meaning"] = f"ids of the k nearest training samples in {name} ({tr.path})"
                f[f"neighbors/{name}/distances"].attrs["distance_units"] = units
            write_array(f, "calibration/ids", split.ids.astype(np.int64), per_sample=False)
            write_array(f, "calibration/rows", split.rows.astype(np.int64), per_sample=False, attrs={"file": run.calibration_source})
            write_array(f, "calibration/labels", split.labels.astype(np.int64), per_sample=False)
            write_array(f, "calibration/scores", run.model.calibration_scores_.astype(np.int64), per_sample=False,
                        attrs={"meaning": "sorted calibration nonconformity scores A (after --drop-zero-calibration when set)"})
        if tmp_png is not None:
            from knntools.plotting.reliability import dknn_panels, reliability_figure

            attack = str(ev.attrs.get("attack") or "none")
            label = Path(evaluate).stem if attack == "none" else f"{attack} ({Path(evaluate).stem})"
            fig = reliability_figure(dknn_panels(credibility=res.credibility, dknn_correct=run.correct, dnn_confidence=run.dnn_confidence,
                                                 dnn_correct=run.dnn_correct, label=label), n_bins=config["bins"])
            fig.savefig(tmp_png, format="png", dpi=110)


def _report_end(out: Output, run, config: dict, output: Path, plot: Optional[Path], tr, write_s: float, total_s: float) -> None:
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    metrics, timing = run.metrics, run.timing
    out.table("per-layer timing (s)", ["layer", "dim", "read", "search"], [(n, tr.layer_dim(n), timing[n]["read_s"], timing[n]["search_s"]) for n in run.layers])
    acc_txt = f"DkNN accuracy {metrics['accuracy']:.4f}" + (f", DNN {metrics['dnn_accuracy']:.4f}" if metrics["dnn_accuracy"] is not None else "")
    cw = metrics["mean_credibility_wrong"]
    out.info(f"{acc_txt}; mean credibility {metrics['mean_credibility']:.4f} (correct {metrics['mean_credibility_correct'] or float('nan'):.4f}, "
             f"wrong {cw if cw is not None else float('nan'):.4f}); calibration |A| = {metrics['calibration_scores_kept']}; "
             f"{total_s:.1f} s, peak RSS {peak_mb:.0f} MB → {output}")
    keys = ("backend", "metric", "normalize", "center", "p_value", "drop_zero_calibration", "calibration_mode")
    out.result({
        "command": "dknn", "output": str(output), "plot": str(plot) if plot is not None else None,
        **metrics, "n_train": run.n_train, "n_classes": run.n_classes, "k": config["k"], "layers": run.layers, **{key: config[key] for key in keys},
        "calibration_source": run.calibration_source, "seed": config["seed"],
        "timing_s": {"total": total_s, "search": float(sum(t["search_s"] for t in timing.values())), "read": float(sum(t["read_s"] for t in timing.values())),
                     "load_index": run.load_index_s, "write": write_s, "per_layer": timing},
        "peak_rss_mb": peak_mb,
    }, [output] + ([plot] if plot is not None else []))
