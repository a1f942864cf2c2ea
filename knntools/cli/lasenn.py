"""``knntools lasenn``: LaSeNN (Schneider, Algorithm 1) — blend the network's output with its neighbours'."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, Json, NumThreads, OutputPath, Quiet, Seed, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, Ef, EfConstruction, HnswM, Metric

HELP = """Predict with LaSeNN: w_q·C(x_q) + (1 − w_q)·mean C(x_nn) over the k nearest training samples.

C is the network's output (softmax of the stored logits; --network-output logits for raw logits);
neighbours are searched in one layer (--layer paper, the default: the paper's layer for the file's
model_arch — conv8, the third-last conv, for vgg13; layer3, the second-last BasicBlock, for
resnet10; the penultimate layer for other architectures) with --metric l2 (squared L2 ranks the
same) or cosine. Defaults are the paper's: k = 3, w_q = 0.88. Several values (-k 1,2,3,4,8
--w-q 0,0.52,0.76,0.88,0.94,0.97) add a parameter-sweep table (Tables 5–6) computed from one
search; the file then holds the predictions of k = 3 / w_q = 0.88 when listed, else of the first
values. --flipped adds the neighbours of horizontally flipped queries (§3.6; union, k closest).
--analyze adds Table 2: pureness P, avgL2, corr(P, avgL2) with p-value, samePred, avgL2 of
correct / wrong / changed samples.

Reads: train.h5 and test.h5 activations (layers/<layer>, logits, labels, labels_clean, ids).
Writes: a predictions file: predictions, scores (blended), dnn_predictions, changed, ids, labels,
neighbors/<layer>/{ids,rows,labels,distances[,flipped]}; with --analyze pureness, avg_l2.
"""

EPILOG = """Examples:

  knntools lasenn train.h5 test.h5 --layer penultimate -k 3 --w-q 0.88 -o lasenn.h5 --json

  knntools lasenn train.h5 test.h5 --metric cosine --analyze -o lasenn_cos.h5

  knntools lasenn train.h5 test.h5 -k 1,2,3,4,8 --w-q 0,0.52,0.76,0.88,0.94,0.97 -o sweep.h5

  knntools lasenn train.h5 test.h5 --flipped test_flip.h5 -o lasenn_flip.h5
"""


@handle_errors("lasenn")
def lasenn_cli(
    train: Annotated[Path, typer.Argument(help="Training activations (the neighbours' base).", dir_okay=False)],
    test: Annotated[Path, typer.Argument(help="Query activations (e.g. the test split), same model.", dir_okay=False)],
    output: OutputPath,
    layer: Annotated[str, typer.Option("--layer", help="Layer whose activations define the neighbours: 'paper' (vgg13: conv8, resnet10: layer3, else penultimate), 'penultimate', 'logits' or a name.")] = "paper",
    k: Annotated[str, typer.Option("-k", "--k", "--n-neighbors", help="Neighbours k; a comma list (1,2,3,4,8) adds a sweep.")] = "3",
    w_q: Annotated[str, typer.Option("--w-q", help="Weight of the query's own output in [0, 1]; a comma list adds a sweep.")] = "0.88",
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

    import numpy as np

    from knntools.cli._search_options import distance_units, search_params
    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_output_path, check_same_source
    from knntools.io.kinds import write_predictions
    from knntools.methods import lasenn as ls
    from knntools.utils import parse_float_list, parse_int_list

    out = Output("lasenn", json_mode=json_, quiet=quiet, verbose=verbose)
    t0 = time.perf_counter()
    # ---- validate everything before heavy work ------------------------------------------
    ks = parse_int_list(k, "-k")
    if any(v < 1 for v in ks):
        raise InputError(f"-k {k}: expected positive integers")
    w_qs = [ls.check_w_q(v, "--w-q") for v in parse_float_list(w_q, "--w-q")]
    ls.check_output(network_output)
    ks = list(dict.fromkeys(ks))
    w_qs = list(dict.fromkeys(w_qs))
    k_main = ls.DEFAULT_K if ls.DEFAULT_K in ks and len(ks) > 1 else ks[0]
    w_main = ls.DEFAULT_W_Q if ls.DEFAULT_W_Q in w_qs and len(w_qs) > 1 else w_qs[0]
    k_max = max(ks)
    params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads or None,
                           seed=seed, device=device)
    check_output_path(output, force)
    with KFile(train, kind="activations") as ftr, KFile(test, kind="activations") as fte:
        if layer == "paper":
            arch = ftr.attrs.get("model_arch")
            want = ls.paper_layer(arch)
            if want != "penultimate" and want not in ftr.layers:
                raise InputError(f"{ftr.path}: layer '{want}' not found; expected the paper's LaSeNN layer for {arch} "
                                 f"(embed it with `knntools embed --layers {want},penultimate`) or an explicit --layer")
            layer = want
        name = ftr.resolve_layers(layer)[0]
        fte.layer_path(name)
        check_same_source(ftr, fte, [name])
        for f in (ftr, fte):
            if not f.has("logits"):
                raise InputError(f"{f.path}: dataset 'logits' not found; expected the network's logits (re-run `knntools embed`)")
        c_tr, c_te = ftr.dataset("logits").shape[1], fte.dataset("logits").shape[1]
        if c_tr != c_te:
            raise InputError(f"{test}: logits have {c_te} classes but {train} has {c_tr}; expected the same classes")
        n_train = ftr.n_samples
        if k_max >= n_train:
            raise InputError(f"-k {k_max}: must be smaller than the training size ({train}: {n_train} samples)")
        ffl = None
        if flipped is not None:
            ffl = KFile(flipped, kind="activations")
        try:
            if ffl is not None:
                ffl.layer_path(name)
                check_same_source(ftr, ffl, [name])
                if ffl.n_samples != fte.n_samples:
                    raise InputError(f"{flipped}: {ffl.n_samples} samples but {test} has {fte.n_samples}; expected the flipped versions of the same queries")
                if ffl.has("ids") and fte.has("ids") and not np.array_equal(ffl.read("ids"), fte.read("ids")):
                    raise InputError(f"{flipped}: ids differ from {test}'s; expected the flipped versions of the same queries in the same order")
            # ---- read -----------------------------------------------------------------------
            X_tr = ftr.read_layer(name)
            logits_tr = ftr.read("logits", dtype=np.float64)
            y_tr = ftr.read_labels("labels") if ftr.has("labels") else None
            ids_tr = ftr.ids()
            Q = fte.read_layer(name)
            logits_te = fte.read("logits", dtype=np.float64)
            y_te = fte.truth_labels() if fte.has(fte.truth_name) else None
            ids_te = fte.ids()
            Q_fl = ffl.read_layer(name) if ffl is not None else None
            classes = ftr.classes or [str(i) for i in range(c_tr)]
            parents = [ftr.uuid, fte.uuid] + ([ffl.uuid] if ffl is not None else [])
        finally:
            if ffl is not None:
                ffl.close()
    # labels must index the logits' classes even when a file has no `classes` list to check them against
    for y, path, field in ((y_tr, train, "labels"), (y_te, test, "labels_clean/labels")):
        if y is not None and y.size and (y.min() < 0 or y.max() >= c_tr):
            raise InputError(f"{path}: {field}: labels span [{y.min()}, {y.max()}]; expected integers in [0, {c_tr}) (the logits' classes)")
    if analyze and (y_te is None or y_tr is None):
        raise InputError(f"--analyze needs labels in both files ({train}, {test}); expected datasets 'labels' / 'labels_clean'")
    t_read = time.perf_counter() - t0

    # ---- search once with the largest k -------------------------------------------------
    t1 = time.perf_counter()
    model = ls.LaSeNN(k=k_max, w_q=w_main, metric=metric, backend=backend, output=network_output, **params).fit(X_tr, logits_tr)
    dist, idx, from_fl = model.kneighbors(Q, Q_fl, k_max)
    t_search = time.perf_counter() - t1
    q_out = ls.network_outputs(logits_te, network_output)
    dnn_pred = logits_te.argmax(1).astype(np.int64)
    scores = ls.lasenn_scores(q_out, model.train_outputs_, idx, k_main, w_main)
    pred = scores.argmax(1).astype(np.int64)
    summary = ls.change_summary(dnn_pred, pred, y_te)
    sweep_rows = ls.sweep(q_out, model.train_outputs_, idx, ks, w_qs, y_te) if (len(ks) > 1 or len(w_qs) > 1) else None

    analysis = None
    extras = {"dnn_predictions": dnn_pred, "changed": pred != dnn_pred}
    if analyze:
        avg = ls.euclidean_to_neighbors(Q, X_tr, idx[:, :k_main]).mean(1)
        analysis, per = ls.analyze(avg, y_tr[idx[:, :k_main]], y_te, dnn_pred, pred)
        extras.update(per)
    neighbors = {name: {
        "ids": ids_tr[idx[:, :k_main]],
        "rows": idx[:, :k_main],
        "distances": dist[:, :k_main].astype(np.float32),
        **({"labels": y_tr[idx[:, :k_main]]} if y_tr is not None else {}),
        **({"flipped": from_fl[:, :k_main]} if Q_fl is not None else {}),
    }}
    run_params = {"layer": name, "k": k_main, "w_q": w_main, "network_output": network_output, "metric": metric,
                  "backend": backend, "flipped": str(flipped) if flipped else None, "search_params": params,
                  "distance_units": distance_units(metric), "k_list": ks, "w_q_list": w_qs}
    metrics = {**summary, **({"analysis": analysis} if analysis else {}), **({"sweep": sweep_rows} if sweep_rows else {})}
    write_predictions(
        output, method="lasenn", predictions=pred, scores=scores.astype(np.float32), ids=ids_te, labels=y_te,
        classes=classes, extras=extras, neighbors=neighbors, params=run_params, metrics=metrics,
        attrs={"scores_meaning": f"blended network outputs ({network_output}): w_q*C(x_q) + (1-w_q)*mean C(x_nn)"},
        parents=parents, seed=seed if backend == "hnsw" else None, force=force,
    )
    elapsed = time.perf_counter() - t0

    # ---- report -----------------------------------------------------------------------------
    out.info(f"[bold]lasenn[/bold] layer {name} ({X_tr.shape[1]}-d), {n_train} train × {len(Q)} queries, "
             f"k={k_main}, w_q={w_main:g}, {metric}/{backend}{' + flipped' if Q_fl is not None else ''} → {output}")
    if y_te is not None:
        out.table(None, ["", "accuracy"], [("network", summary["accuracy_original"]), ("lasenn", summary["accuracy"]),
                                           ("Δ", summary["delta"])])
        out.info(f"changed {summary['n_changed']} predictions: {summary['n_changed_to_right']} became right, "
                 f"{summary['n_changed_to_wrong']} became wrong, {summary['n_changed_wrong_to_wrong']} wrong → wrong")
    else:
        out.info(f"changed {summary['n_changed']} predictions (no labels: accuracy not computed)")
    if analysis:
        out.table("Table 2 statistics", ["corr(P,avgL2)", "p-value", "samePred", "avgL2", "avgL2_corr", "avgL2_wrong", "avgL2_change"],
                  [(analysis["corr_p_avg_l2"], f"{analysis['corr_p_value']:.2e}", analysis["same_pred"], analysis["avg_l2"],
                    analysis["avg_l2_correct"], analysis["avg_l2_wrong"], analysis["avg_l2_changed"])])
    if sweep_rows:
        cols = ["k", "w_q", "n_changed"] + (["acc. LaSeNN", "acc. original", "Δ acc"] if y_te is not None else [])
        out.table("parameter sweep (one search)", cols,
                  [(r["k"], f"{r['w_q']:g}", r["n_changed"]) + ((r["accuracy"], r["accuracy_original"], r["delta"]) if y_te is not None else ())
                   for r in sweep_rows])
    out.detail(f"read {t_read:.2f}s, search {t_search:.2f}s, total {elapsed:.2f}s")
    result = {"command": "lasenn", "output": str(output), "layer": name, "k": k_main, "w_q": w_main, "metric": metric,
              "backend": backend, "network_output": network_output, "flipped": bool(Q_fl is not None),
              "n_train": n_train, "n_queries": int(len(Q)), **summary,
              "analysis": analysis, "sweep": sweep_rows, "time_s": {"read": t_read, "search": t_search, "total": elapsed}}
    out.result(result, output)
