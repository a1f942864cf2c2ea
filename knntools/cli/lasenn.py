"""``knntools lasenn``: LaSeNN (Schneider, Algorithm 1) — blend the network's output with its neighbours'."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import K, Device, Force, Json, KSweep, Layer, NumThreads, OutputPath, Quiet, Seed, SelectOn, ValFraction, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Ef, EfConstruction, HnswM, Metric

HELP = """Predict with LaSeNN: w_q·C(x_q) + (1 − w_q)·mean C(x_nn) over the k nearest training samples.

C is the network's output (softmax of the stored logits; --network-output logits for raw logits);
neighbours are searched in one layer (--layer; besides penultimate | logits | NAME it takes
'paper', the default: the paper's layer for the file's model_arch — conv8, the third-last conv, for
vgg13; layer3, the second-last BasicBlock, for resnet10; the penultimate layer for other
architectures) with --metric l2 (squared L2 ranks the same) or cosine. Defaults are the paper's
fixed values: -k 3, --w-q 0.88. --k-sweep 1,2,3,4,8 and/or --w-q 0,0.52,0.76,0.88,0.94,0.97 add
a parameter-sweep table of test accuracies (Tables 5–6) computed from one search; the file holds
the predictions of -k and of w_q = 0.88 when listed, else of the first --w-q value.
--select-on validation chooses (k, w_q) among those candidates (the paper's Table 5 w_q values
when one --w-q is given) by accuracy on a seeded, class-stratified --val-fraction of the TRAINING
rows, held out of the neighbour index while choosing; the test labels are never used to choose
and the sweep table marks the chosen row. --flipped adds the neighbours of horizontally flipped
queries (§3.6; union, k closest). --analyze adds Table 2: pureness P, avgL2, corr(P, avgL2) with
p-value, samePred, avgL2 of correct / wrong / changed samples.

Reads: train.h5 and test.h5 activations (layers/<layer>, logits, labels, labels_clean, ids).
Writes: a predictions file: predictions, scores (blended), dnn_predictions, changed, ids, labels,
neighbors/<layer>/{ids,rows,labels,distances[,flipped]}; with --analyze pureness, avg_l2.
"""

EPILOG = """Examples:

  knntools lasenn train.h5 test.h5 --layer penultimate -k 3 --w-q 0.88 -o lasenn.h5 --json

  knntools lasenn train.h5 test.h5 --metric cosine --analyze -o lasenn_cos.h5

  knntools lasenn train.h5 test.h5 --k-sweep 1,2,3,4,8 --w-q 0,0.52,0.76,0.88,0.94,0.97 -o sweep.h5

  knntools lasenn train.h5 test.h5 --k-sweep 1,2,3,4,8 --select-on validation --val-fraction 0.1 -o chosen.h5

  knntools lasenn train.h5 test.h5 --flipped test_flip.h5 -o lasenn_flip.h5
"""


@handle_errors("lasenn")
def lasenn_cli(
    train: Annotated[Path, typer.Argument(help="Training activations (the neighbours' base).", dir_okay=False)],
    test: Annotated[Path, typer.Argument(help="Query activations (e.g. the test split), same model.", dir_okay=False)],
    output: OutputPath,
    layer: Layer = "paper",
    k: K = 3,
    k_sweep: KSweep = None,  # type: ignore[assignment]
    w_q: Annotated[str, typer.Option("--w-q", help="Weight of the query's own output in [0, 1]; a comma list adds a sweep.")] = "0.88",
    select_on: SelectOn = "none",
    val_fraction: ValFraction = 0.1,
    network_output: Annotated[str, typer.Option("--network-output", help="C(x) to blend: softmax (of the stored logits) | logits (raw).")] = "softmax",
    flipped: Annotated[Optional[Path], typer.Option("--flipped", help="Activations of the horizontally flipped queries (same rows as TEST), e.g. from `knntools embed` of flipped inputs.", dir_okay=False)] = None,
    analyze: Annotated[bool, typer.Option("--analyze", help="Add the Table 2 statistics (pureness, avgL2, correlation, samePred).")] = False,
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

    from knntools.cli._options import parse_k_list
    from knntools.cli._search_options import distance_units, search_params
    from knntools.errors import InputError
    from knntools.io.h5 import check_output_path
    from knntools.methods import lasenn as ls
    from knntools.utils import parse_float_list

    out = Output("lasenn", json_mode=json_, quiet=quiet, verbose=verbose)
    t0 = time.perf_counter()
    ks = parse_k_list(k_sweep) if k_sweep else None
    w_qs = list(dict.fromkeys(ls.check_w_q(v, "--w-q") for v in parse_float_list(w_q, "--w-q")))
    ls.check_output(network_output)
    if select_on == "validation" and not 0.0 < val_fraction < 1.0:
        raise InputError(f"--val-fraction {val_fraction}: expected a fraction in (0, 1), e.g. 0.1")
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads or None,
                           seed=seed, device=device)
    check_output_path(output, force)
    d = _read(train, test, flipped, layer, need_train_labels=analyze or select_on == "validation")
    t_read = time.perf_counter() - t0
    res = ls.run_lasenn(d["X_tr"], d["logits_tr"], d["Q"], d["logits_te"], k=k, w_q=ls.main_value(w_qs, ls.DEFAULT_W_Q),
                        k_sweep=ks, w_q_sweep=w_qs if len(w_qs) > 1 else None, y_train=d["y_tr"], y_test=d["y_te"],
                        Q_flipped=d["Q_fl"], analyze=analyze, select_on=select_on, val_fraction=val_fraction, val_seed=seed,
                        metric=metric, backend=backend, output=network_output, **params)
    run_params = {"layer": d["name"], "k": res.k, "w_q": res.w_q, "network_output": network_output, "metric": metric,
                  "backend": backend, "flipped": str(flipped) if flipped else None, "search_params": params,
                  "distance_units": distance_units(metric), "k_list": ks or [k], "w_q_list": w_qs,
                  **({"select_on": "validation", "val_fraction": val_fraction} if res.selection else {})}
    _write(output, res, d, run_params, seed=seed if backend == "hnsw" else None, force=force)
    times = {"read": t_read, "search": res.search_s, "total": time.perf_counter() - t0}
    _report(out, res, d, output, metric, backend, times)
    out.result({"command": "lasenn", "output": str(output), "layer": d["name"], "k": res.k, "w_q": res.w_q, "metric": metric,
                "backend": backend, "network_output": network_output, "flipped": d["Q_fl"] is not None,
                "n_train": d["n_train"], "n_queries": int(len(d["Q"])), **res.summary, "analysis": res.analysis,
                "sweep": res.sweep, **({"selection": res.selection.summary()} if res.selection else {}), "time_s": times}, output)


def _read(train: Path, test: Path, flipped: Optional[Path], layer: str, *, need_train_labels: bool) -> dict[str, Any]:
    """Open and check the input files, resolve the layer and read every array the method needs."""
    import numpy as np

    from knntools.cli._knn_options import check_activation_pair
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_same_source
    from knntools.methods import lasenn as ls

    with KFile(train, kind="activations") as ftr, KFile(test, kind="activations") as fte:
        name = ftr.resolve_layers(layer, single=True, extra=("paper",))[0]
        if name == "paper":
            arch = ftr.attrs.get("model_arch")
            want = ls.paper_layer(arch)
            if want != "penultimate" and want not in ftr.layers:
                raise InputError(f"{ftr.path}: layer '{want}' not found; expected the paper's LaSeNN layer for {arch} "
                                 f"(embed it with `knntools embed --layers {want},penultimate`) or an explicit --layer")
            name = ftr.resolve_layers(want, single=True)[0]
        check_activation_pair(ftr, fte, [name])
        c_tr = ftr.dataset("logits").shape[1]
        ffl = KFile(flipped, kind="activations") if flipped is not None else None
        try:
            if ffl is not None:
                ffl.layer_path(name)
                check_same_source(ftr, ffl, [name])
                if ffl.n_samples != fte.n_samples:
                    raise InputError(f"{flipped}: {ffl.n_samples} samples but {test} has {fte.n_samples}; expected the flipped versions of the same queries")
                if ffl.has("ids") and fte.has("ids") and not np.array_equal(ffl.read("ids"), fte.read("ids")):
                    raise InputError(f"{flipped}: ids differ from {test}'s; expected the flipped versions of the same queries in the same order")
            d = {"name": name, "n_train": ftr.n_samples, "X_tr": ftr.read_layer(name), "logits_tr": ftr.read("logits", dtype=np.float64),
                 "y_tr": ftr.read_labels("labels") if ftr.has("labels") else None, "ids_tr": ftr.ids(),
                 "Q": fte.read_layer(name), "logits_te": fte.read("logits", dtype=np.float64),
                 "y_te": fte.truth_labels() if fte.has(fte.truth_name) else None, "ids_te": fte.ids(),
                 "Q_fl": ffl.read_layer(name) if ffl is not None else None,
                 "classes": ftr.classes or [str(i) for i in range(c_tr)],
                 "parents": [ftr.uuid, fte.uuid] + ([ffl.uuid] if ffl is not None else [])}
        finally:
            if ffl is not None:
                ffl.close()
    # labels must index the logits' classes even when a file has no `classes` list to check them against
    for y, path, field in ((d["y_tr"], train, "labels"), (d["y_te"], test, "labels_clean/labels")):
        if y is not None and y.size and (y.min() < 0 or y.max() >= c_tr):
            raise InputError(f"{path}: {field}: labels span [{y.min()}, {y.max()}]; expected integers in [0, {c_tr}) (the logits' classes)")
    if need_train_labels and d["y_tr"] is None:
        raise InputError(f"{train}: dataset 'labels' not found; expected the training labels (needed by --analyze and --select-on validation)")
    return d


def _write(output: Path, res: Any, d: dict[str, Any], run_params: dict[str, Any], *, seed: Optional[int], force: bool) -> None:
    """Write the predictions file: predictions, blended scores, per-sample extras and the kept neighbours."""
    import numpy as np

    from knntools.io.kinds import write_predictions

    neighbors = {d["name"]: {
        "ids": d["ids_tr"][res.indices],
        "rows": res.indices,
        "distances": res.distances,
        **({"labels": d["y_tr"][res.indices]} if d["y_tr"] is not None else {}),
        **({"flipped": res.from_flipped} if d["Q_fl"] is not None else {}),
    }}
    metrics = {**res.summary, **({"analysis": res.analysis} if res.analysis else {}), **({"sweep": res.sweep} if res.sweep else {}),
               **({"selection": res.selection.summary()} if res.selection else {})}
    write_predictions(
        output, method="lasenn", predictions=res.predictions, scores=res.scores.astype(np.float32), ids=d["ids_te"],
        labels=d["y_te"], classes=d["classes"], extras={"dnn_predictions": res.dnn_predictions, "changed": res.changed, **res.per_sample},
        neighbors=neighbors, params=run_params, metrics=metrics,
        attrs={"scores_meaning": f"blended network outputs ({run_params['network_output']}): w_q*C(x_q) + (1-w_q)*mean C(x_nn)"},
        parents=d["parents"], seed=seed, force=force,
    )


def _report(out: Output, res: Any, d: dict[str, Any], output: Path, metric: str, backend: str, times: dict[str, float]) -> None:
    """Print the accuracy table, the change counts, Table 2, the selection and the sweep table."""
    s, a, y_te = res.summary, res.analysis, d["y_te"]
    out.info(f"[bold]lasenn[/bold] layer {d['name']} ({d['X_tr'].shape[1]}-d), {d['n_train']} train × {len(d['Q'])} queries, "
             f"k={res.k}, w_q={res.w_q:g}, {metric}/{backend}{' + flipped' if d['Q_fl'] is not None else ''} → {output}")
    if y_te is not None:
        out.table(None, ["", "accuracy"], [("network", s["accuracy_original"]), ("lasenn", s["accuracy"]), ("Δ", s["delta"])])
        out.info(f"changed {s['n_changed']} predictions: {s['n_changed_to_right']} became right, "
                 f"{s['n_changed_to_wrong']} became wrong, {s['n_changed_wrong_to_wrong']} wrong → wrong")
    else:
        out.info(f"changed {s['n_changed']} predictions (no labels: accuracy not computed)")
    if a:
        out.table("Table 2 statistics", ["corr(P,avgL2)", "p-value", "samePred", "avgL2", "avgL2_corr", "avgL2_wrong", "avgL2_change"],
                  [(a["corr_p_avg_l2"], f"{a['corr_p_value']:.2e}", a["same_pred"], a["avg_l2"], a["avg_l2_correct"],
                    a["avg_l2_wrong"], a["avg_l2_changed"])])
    sel = res.selection
    if sel is not None:
        out.info(f"chosen on validation ({len(sel.val_rows)} of {d['n_train']} training rows held out, seed {sel.seed}): "
                 f"k={sel.k}, w_q={sel.w_q:g}, validation accuracy {sel.accuracy:.4f} (network {sel.accuracy_original:.4f})")
    if res.sweep:
        cols = ["k", "w_q", "n_changed"] + (["acc. LaSeNN", "acc. original", "Δ acc"] if y_te is not None else [])
        cols += ["acc. val", "chosen on val."] if sel is not None else []
        out.table("parameter sweep (one search; test accuracy)", cols,
                  [(r["k"], f"{r['w_q']:g}", r["n_changed"]) + ((r["accuracy"], r["accuracy_original"], r["delta"]) if y_te is not None else ())
                   + ((r["accuracy_val"], "✓" if r["selected"] else "") if sel is not None else ()) for r in res.sweep])
    out.detail(f"read {times['read']:.2f}s, search {times['search']:.2f}s, total {times['total']:.2f}s")
