"""``knntools noise``: generate noisy-label variants of a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import DataDir, DatasetName, Download, Force, Json, LabelColumn, OutputPath, Quiet, Seed, Split, Verbose
from knntools.cli._output import Output

HELP = """Corrupt a dataset's labels with a label-noise model and write a `labels` file.

Kinds: uniform (kNet: redraw among all classes incl. the true one; --exclude-true for the others),
asymmetric-random (kNet: 2r/3 and r/3 to two random other classes), semantic (built-in maps:
cifar10 and mnist/digits from Patrini et al.; svhn and fashion-mnist are invented by this tool — no
paper gives one, kNet's SVHN map is unpublished, so svhn reuses the MNIST digit map as a guess —
or --class-map), pair (to the next class), permute
(LaSeNN: shuffle the labels of a fraction r), random (Cohen et al.: uniform random labels),
matrix (--transition-matrix T.csv|.npy, T[i, j] = P(noisy=j | clean=i)).

Reads: a dataset split (--dataset, --data-dir) or a features file (--labels-from).
Writes: labels, labels_clean, ids, is_noisy, transition_matrix, noise_matrix (realised).
"""

EPILOG = """Examples:

  knntools noise --dataset fashion-mnist --kind uniform --rate 0.4 --seed 0 -o labels.h5 --json

  knntools noise --dataset cifar10 --data-dir ~/data --kind semantic --rate 0.4 -o l3.h5
"""


@handle_errors("noise")
def noise_cli(
    output: OutputPath,
    kind: Annotated[str, typer.Option("--kind", help="uniform | asymmetric-random | semantic | pair | permute | random | matrix")] = "uniform",
    rate: Annotated[Optional[float], typer.Option("--rate", help="Noise rate r in [0, 1] (random: default 1).")] = None,
    dataset: DatasetName = "digits",
    data_dir: DataDir = None,
    download: Download = False,
    split: Split = "train",
    label_column: LabelColumn = None,
    sampling: Annotated[str, typer.Option("--sampling", help="exact (realised counts = requested up to rounding) | stochastic (independent draws).")] = "exact",
    exclude_true: Annotated[bool, typer.Option("--exclude-true", help="uniform: redraw among the other C-1 classes only (flip rate = r).")] = False,
    class_map: Annotated[Optional[str], typer.Option("--class-map", help="semantic: CLEAN:NOISY pairs by name or index, e.g. 'cat:dog,dog:cat'.")] = None,
    transition_matrix: Annotated[Optional[Path], typer.Option("--transition-matrix", help="matrix: row-stochastic C×C matrix (.csv or .npy).", dir_okay=False)] = None,
    seed: Seed = 0,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    import numpy as np

    from knntools.errors import InputError
    from knntools.io import datasets as dsets
    from knntools.io.h5 import check_output_path
    from knntools.io.kinds import write_labels
    from knntools.methods import noise as nz

    out = Output("noise", json_mode=json_, quiet=quiet, verbose=verbose)
    if kind not in nz.KINDS:
        raise InputError(f"--kind {kind!r}: unknown noise kind; expected one of {', '.join(nz.KINDS)}")
    if sampling not in nz.SAMPLING:
        raise InputError(f"--sampling {sampling!r}: expected one of {', '.join(nz.SAMPLING)}")
    if rate is None:
        rate = 1.0 if kind == "random" else (0.0 if kind == "matrix" else None)
        if rate is None:
            raise InputError(f"--rate: required for --kind {kind}; expected a value in [0, 1]")
    nz.check_rate(rate)
    check_output_path(output, force)
    T_user = None
    if kind == "matrix":
        if transition_matrix is None:
            raise InputError("--kind matrix: expected --transition-matrix FILE (.csv or .npy)")
        T_user = nz.load_transition_matrix(str(transition_matrix))
    if label_column is not None and Path(dataset).suffix.lower() == ".csv":
        data = dsets.load_table(dataset, label_column=label_column)
    else:
        data = dsets.load_dataset(dataset, split=split, data_dir=data_dir, download=download)
    if T_user is not None:
        nz.check_transition_matrix(T_user, data.n_classes, where=str(transition_matrix))
    cmap = None
    if kind == "semantic":
        raw = nz.parse_class_map(class_map) if class_map else nz.SEMANTIC_MAPS.get(data.name)
        if raw is None:
            raise InputError(f"--kind semantic: no built-in class map for dataset '{data.name}' (built-in: {', '.join(nz.SEMANTIC_MAPS)}); pass --class-map CLEAN:NOISY,…")
        cmap = nz.resolve_class_map(raw, data.classes)
    res = nz.add_label_noise(
        data.y, data.n_classes, kind, rate, sampling=sampling, include_true=not exclude_true,
        class_map=cmap, transition_matrix=T_user, random_state=seed,
    )
    attrs = {
        "noise_kind": kind, "rate": float(rate), "actual_rate": res.actual_rate, "sampling": sampling,
        "include_true": bool(not exclude_true), "dataset": data.name, "split": data.split,
        "class_map": {data.classes[a]: data.classes[b] for a, b in (cmap or {}).items()},
    }
    write_labels(
        output, labels=res.labels, labels_clean=res.labels_clean, ids=data.ids,
        transition_matrix=res.transition_matrix, noise_matrix=res.noise_matrix, classes=data.classes,
        attrs=attrs, parents=[], seed=seed, force=force,
    )
    per_class = np.diag(res.noise_matrix)
    out.info(f"[bold]noise[/bold] {kind} r={rate:g} on {data.name}/{data.split}: {data.n_samples} labels, "
             f"{int(res.is_noisy.sum())} changed (realised rate {res.actual_rate:.4f}) → {output}")
    out.table("realised P(noisy = clean) per class", ["class", "n", "kept", "flipped"],
              [(data.classes[i], int((data.y == i).sum()), float(per_class[i]), float(1 - per_class[i])) for i in range(data.n_classes)])
    out.result({
        "command": "noise", "output": str(output), "kind": kind, "rate": float(rate), "actual_rate": res.actual_rate,
        "n_samples": data.n_samples, "n_changed": int(res.is_noisy.sum()), "n_classes": data.n_classes,
        "dataset": data.name, "split": data.split, "seed": seed, "sampling": sampling,
        "transition_matrix": res.transition_matrix.tolist(),
    }, output)
