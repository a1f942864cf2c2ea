"""``knntools oversample``: balance a training file with a seq2knn model's predicted neighbour vectors,
or with SMOTE / ADASYN."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Force, InputFile, Json, OutputPath, Quiet, Seed, Verbose
from knntools.cli._output import Output

HELP = """Balance the classes of a training file by adding synthetic minority samples and write a `features` file.

--method v2vsls | mnknn-vec (Xu & Klabjan §4): a model trained by `knntools seq2knn` (--model seq.pt;
train it with --lam 1.3 --alpha 3 as the paper recommends) predicts K neighbour vectors and their
labels for each training sample, in random order; a synthetic (vector, predicted label) is added when
its label is a minority class still short of the majority count. One pass over the real training
samples, as the paper (--max-rounds 1, the default): at most K synthetic rows per real row, no
class pushed above the majority, synthetic rows never generate further ones — so a class may stay
short of balanced. Deviation: --max-rounds N (0 = until balanced, at most 50) runs further passes
that generate from the previous pass's synthetic rows. --label-from source: only minority samples
are sources and their vectors take the source's class.
--method smote | adasyn: imbalanced-learn's SMOTE / ADASYN (--k-neighbors), for comparison.
Both work in the standardised space (the checkpoint's scaler; the training rows' mean/std for
SMOTE/ADASYN) and write rows back in the original units. --eval TEST.h5 trains downstream classifiers
(--classifiers) on the original and the oversampled rows and reports macro F1 on TEST.

Reads: TRAIN — a `features` file (or `activations` with --layer): features, labels, ids.
Writes: features float32 [N+S, D] (originals first), labels, ids (−1 for synthetic rows),
synthetic bool [N+S]; attrs oversample_method, counts_before, counts_after, n_synthetic.
"""

EPILOG = """Examples:

  knntools seq2knn train.h5 --model v2vsls --lam 1.3 --alpha 3 -o seq.pt

  knntools oversample train.h5 --method v2vsls --model seq.pt -o balanced.h5 --eval test.h5

  knntools oversample train.h5 --method smote -o balanced_smote.h5 --json
"""


@handle_errors("oversample")
def oversample_cli(
    train: InputFile,
    output: OutputPath,
    method: Annotated[str, typer.Option("--method", help="v2vsls | mnknn-vec (need --model) | smote | adasyn")] = "v2vsls",
    model: Annotated[Optional[Path], typer.Option("--model", help="Checkpoint from `knntools seq2knn` (a v2vsls, v2vs or mnknn-vec model).", dir_okay=False)] = None,
    layer: Annotated[str, typer.Option("--layer", help="Activations files: the layer to oversample. Ignored for features files.")] = "penultimate",
    k_neighbors: Annotated[int, typer.Option("--k-neighbors", min=1, help="SMOTE k_neighbors / ADASYN n_neighbors.")] = 5,
    label_from: Annotated[str, typer.Option("--label-from", help="Model methods: label a synthetic vector with the model's predicted neighbour label (predicted: the paper; every training sample is a source) or with its minority source sample's class (source).")] = "predicted",
    max_rounds: Annotated[int, typer.Option("--max-rounds", min=0, help="Model methods: passes of generation; 1 = the paper's single pass over the real training samples (at most K synthetic rows each); N > 1 = deviation: later passes generate from the previous pass's synthetic rows; 0 = such passes until balanced (at most 50).")] = 1,
    eval_file: Annotated[Optional[Path], typer.Option("--eval", help="Test file: compare downstream classifiers trained on original vs oversampled rows (macro F1).", dir_okay=False)] = None,
    classifiers: Annotated[str, typer.Option("--classifiers", help="Comma-separated downstream classifiers: rf, ffn, gb, logreg, knn.")] = "rf,ffn,gb",
    seed: Seed = 0,
    num_threads: Annotated[int, typer.Option("--num-threads", min=0, help="torch CPU threads (0 = torch's default).")] = 1,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    import time

    import numpy as np

    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_output_path
    from knntools.io.kinds import write_features
    from knntools.methods import oversample as ovs

    out = Output("oversample", json_mode=json_, quiet=quiet, verbose=verbose)
    method = method.lower().replace("_", "-")
    if method not in ovs.METHODS:
        raise InputError(f"--method {method!r}: expected one of {', '.join(ovs.METHODS)}")
    clf_names = [c.strip() for c in classifiers.split(",") if c.strip()]
    bad = [c for c in clf_names if c not in ovs.CLASSIFIERS]
    if bad or not clf_names:
        raise InputError(f"--classifiers {classifiers!r}: unknown {', '.join(bad) or '(empty)'}; expected names from {', '.join(ovs.CLASSIFIERS)}")
    model_methods = ("v2vsls", "mnknn-vec")
    if method in model_methods and model is None:
        raise InputError(f"--method {method}: expected --model CHECKPOINT.pt from `knntools seq2knn --model {method}`")
    if label_from not in ("predicted", "source"):
        raise InputError(f"--label-from {label_from!r}: expected predicted or source")
    if method not in model_methods and model is not None:
        raise InputError(f"--model: only used with --method v2vsls or mnknn-vec (got --method {method})")
    check_output_path(output, force)
    t0 = time.perf_counter()
    kt = None
    with KFile(train, ("features", "activations")) as kf:
        lname = kf.resolve_layers("features" if kf.kind == "features" else layer)[0]
        X = kf.read_layer(lname)  # finite-checked
        y = kf.read_labels("labels")
        C = kf.n_classes or int(y.max()) + 1
        ids = kf.ids()
        classes = kf.classes or [str(i) for i in range(C)]
        fnames = [str(c) for c in (kf.attrs.get("feature_names") or [])] if kf.kind == "features" else []
        parents = [kf.uuid]
        D = X.shape[1]
        if len(np.unique(y)) < 2:
            raise InputError(f"{train}: labels: a single class present; expected at least two classes to balance")
        Xt = yt = None
        if eval_file is not None:
            with KFile(eval_file, kf.kind) as kt:
                tl = kt.resolve_layers("features" if kt.kind == "features" else lname)[0]
                if kt.layer_dim(tl) != D:
                    raise InputError(f"{eval_file}: {tl} has {kt.layer_dim(tl)} features but {train} has {D}; expected the same width")
                Xt = kt.read_layer(tl)
                yt = kt.truth_labels()
                if yt.size and yt.max() >= C:
                    raise InputError(f"{eval_file}: labels reach {yt.max()}; expected labels in [0, {C}) as in {train}")
                parents.append(kt.uuid)

    from knntools.methods import seq2knn as s2k

    info: dict = {}
    if method in model_methods:
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        net, ck, scaler = s2k.load_checkpoint(model)
        if ck["n_features"] != D:
            raise InputError(f"{model}: checkpoint was trained on {ck['n_features']} features but {train} has {D}; expected a model for this feature dimension")
        if ck["n_classes"] != C:
            raise InputError(f"{model}: checkpoint has {ck['n_classes']} classes but {train} has {C}; expected the same classes")
        if ck["model"] not in s2k.VECTOR_MODELS:
            raise InputError(f"{model}: model {ck['model']} predicts no feature vectors; expected a v2vsls, v2vs or mnknn-vec checkpoint")
        mem = (ck["memory_x"].numpy(), ck["memory_y"].numpy()) if "memory_x" in ck else None
        h = ck["hyper"]
        rng = np.random.default_rng(seed)
        labeler = s2k.ReferenceLabeler(mem[0], mem[1], metric=str(h.get("metric", "l2"))) if mem is not None and ck["model"] == "v2vs" else mem

        def generate(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = s2k.predict(net, rows, name=ck["model"], memory=mem, memory_size=int(h.get("memory_size", 64)), reference=labeler,
                            memory_draws=int(h.get("memory_draws", 5)), random_state=int(rng.integers(0, 2**31 - 1)))
            return p["step_vectors"], p["step_labels"]

        Z = scaler(X)
        res = ovs.model_oversample(Z, y, C, generate, label_from=label_from, max_rounds=max_rounds or None, random_state=seed)
        res.X = np.concatenate([X, scaler.inverse(res.X[len(y):])]) if len(res.X) > len(y) else X
        info = {"checkpoint": str(model), "checkpoint_model": ck["model"], "K": int(h["K"]), "lam": h.get("lam"), "alpha": h.get("alpha"),
                "max_rounds": max_rounds, "label_from": label_from}
    else:
        mean, std = s2k.stream_moments(X)
        scaler = s2k.Standardizer(mean, std)
        ovs.check_smote_neighbors(y, C, k_neighbors, where=f"{train}: labels")
        res = ovs.imblearn_oversample(scaler(X), y, C, method, k_neighbors=k_neighbors, random_state=seed)
        res.X = np.concatenate([X, scaler.inverse(res.X[len(y):])]) if len(res.X) > len(y) else X
        info = {"k_neighbors": k_neighbors}
    n_syn = int(res.synthetic.sum())
    all_ids = np.concatenate([ids, np.full(n_syn, -1, dtype=np.int64)])
    uuid = write_features(output, features=res.X, labels=res.y, classes=classes, ids=all_ids, synthetic=res.synthetic, feature_names=fnames,
                          attrs={"oversample_method": method, "source_file": str(train), "layer": lname, "n_synthetic": n_syn,
                                 "counts_before": res.counts_before.tolist(), "counts_after": res.counts_after.tolist(), **{f"oversample_{k}": v for k, v in info.items()}},
                          parents=parents[:1], seed=seed, force=force)
    summary: dict = {
        "command": "oversample", "output": str(output), "method": method, "n_before": int(len(y)), "n_after": int(len(res.y)),
        "n_synthetic": n_syn, "counts_before": res.counts_before.tolist(), "counts_after": res.counts_after.tolist(),
        "balanced": bool(res.counts_after.max() == res.counts_after[res.counts_after > 0].min()), "seed": seed, "uuid": uuid, **info,
    }
    out.info(f"[bold]oversample[/bold] {method}: {len(y)} → {len(res.y)} rows (+{n_syn} synthetic) → {output}")
    out.table("class counts", ["class", "before", "after"], [(classes[c], int(res.counts_before[c]), int(res.counts_after[c])) for c in range(C)])
    if Xt is not None and yt is not None:
        mean, std = s2k.stream_moments(X)
        sc = s2k.Standardizer(mean, std)
        ev = ovs.evaluate_downstream({"original": (sc(X), y), method: (sc(res.X), res.y)}, sc(Xt), yt, C, clf_names, random_state=seed)
        summary["eval"] = str(eval_file)
        summary["downstream"] = ev
        out.table(f"downstream macro F1 on {eval_file}", ["classifier", "original", method],
                  [(c, ev["original"][c]["macro_f1"], ev[method][c]["macro_f1"]) for c in clf_names])
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    out.result(summary, output)
