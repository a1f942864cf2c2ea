"""``knntools oversample``: balance a training file with a seq2knn model's predicted neighbour vectors,
or with SMOTE / ADASYN."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Force, InputFile, Json, K, Layer, OutputPath, Quiet, Seed, Verbose
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
--method smote | adasyn: imbalanced-learn's SMOTE / ADASYN with -k/--n-neighbors neighbours
(--k-neighbors is deprecated), for comparison.
Both work in the standardised space (the checkpoint's scaler; the training rows' mean/std for
SMOTE/ADASYN) and write rows back in the original units. --eval TEST.h5 trains downstream classifiers
(--classifiers) on the original and the oversampled rows and reports macro F1 on TEST.

Reads: TRAIN — a `features` file (or `activations` with --layer; ignored for features files): features, labels, ids.
Writes: features float32 [N+S, D] (originals first), labels, ids (−1 for synthetic rows),
synthetic bool [N+S]; attrs oversample_method, counts_before, counts_after, n_synthetic.
"""

EPILOG = """Examples:

  knntools seq2knn train.h5 --model v2vsls --lam 1.3 --alpha 3 -o seq.pt

  knntools oversample train.h5 --method v2vsls --model seq.pt -o balanced.h5 --eval test.h5

  knntools oversample train.h5 --method smote -k 5 -o balanced_smote.h5 --json
"""

#: Core parameter names (``name=VALUE`` in the core's errors) -> this command's flags.


@handle_errors("oversample")
def oversample_cli(
    train: InputFile,
    output: OutputPath,
    method: Annotated[str, typer.Option("--method", help="v2vsls | mnknn-vec (need --model) | smote | adasyn")] = "v2vsls",
    model: Annotated[Optional[Path], typer.Option("--model", help="Checkpoint from `knntools seq2knn` (a v2vsls, v2vs or mnknn-vec model).", dir_okay=False)] = None,
    layer: Layer = "penultimate",
    k: K = 5,
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

    from knntools.cli._knn_options import data_layer, open_eval
    from knntools.io.atomic import check_output_path
    from knntools.io.h5 import KFile
    from knntools.io.kinds import write_features
    from knntools.methods import oversample as ovs

    out = Output("oversample", json_mode=json_, quiet=quiet, verbose=verbose)
    method = ovs.check_method(method)
    clf_names = ovs.check_classifiers(classifiers)
    check_output_path(output, force)
    t0 = time.perf_counter()
    with KFile(train, ("features", "activations")) as kf, contextlib.ExitStack() as stack:
        lname = data_layer(kf, layer)
        X, y = kf.read_layer(lname), kf.read_labels("labels")  # finite- and range-checked
        C = kf.n_classes or int(y.max()) + 1
        kt, tl = open_eval(stack, eval_file, kf, lname, n_classes=C)
        Xt, yt = (kt.read_layer(tl), kt.truth_labels()) if kt is not None else (None, None)
        classes = kf.classes or [str(i) for i in range(C)]
        fnames = [str(c) for c in (kf.attrs.get("feature_names") or [])] if kf.kind == "features" else []
        ids, parents = kf.ids(), [kf.uuid] + ([kt.uuid] if kt is not None else [])
    if method in ovs.MODEL_METHODS and num_threads:
        import torch

        torch.set_num_threads(num_threads)
    res = ovs.oversample(X, y, C, method, model=model, n_neighbors=k, label_from=label_from, max_rounds=max_rounds,
                         random_state=seed, where=f"{train}: labels")
    n_syn = int(res.synthetic.sum())
    uuid = write_features(output, features=res.X, labels=res.y, classes=classes, ids=np.concatenate([ids, np.full(n_syn, -1, dtype=np.int64)]),
                          synthetic=res.synthetic, feature_names=fnames,
                          attrs={"oversample_method": method, "source_file": str(train), "layer": lname, "n_synthetic": n_syn,
                                 "counts_before": res.counts_before.tolist(), "counts_after": res.counts_after.tolist(),
                                 **{f"oversample_{key}": v for key, v in res.info.items()}},
                          parents=parents[:1], seed=seed, force=force)
    summary: dict = {
        "command": "oversample", "output": str(output), "method": method, "n_before": int(len(y)), "n_after": int(len(res.y)),
        "n_synthetic": n_syn, "counts_before": res.counts_before.tolist(), "counts_after": res.counts_after.tolist(),
        "balanced": bool(res.counts_after.max() == res.counts_after[res.counts_after > 0].min()), "seed": seed, "uuid": uuid, **res.info,
    }
    out.info(f"[bold]oversample[/bold] {method}: {len(y)} → {len(res.y)} rows (+{n_syn} synthetic) → {output}")
    out.table("class counts", ["class", "before", "after"], [(classes[c], int(res.counts_before[c]), int(res.counts_after[c])) for c in range(C)])
    if Xt is not None:
        ev = ovs.evaluate_oversampling(X, y, res, Xt, yt, C, clf_names, name=method, random_state=seed)
        summary.update({"eval": str(eval_file), "downstream": ev})
        out.table(f"downstream macro F1 on {eval_file}", ["classifier", "original", method],
                  [(c, ev["original"][c]["macro_f1"], ev[method][c]["macro_f1"]) for c in clf_names])
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    out.result(summary, output)
