"""``knntools features``: turn a table (CSV, NPZ) or a bundled dataset into a `features` file."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import DataDir, Download, Force, Json, LabelColumn, OutputPath, Quiet, Split, Verbose
from knntools.cli._output import Output

HELP = """Convert a table (CSV with a header, NPZ with X/y) or a bundled/torchvision dataset split into a
`features` file that seq2knn, oversample and index read.

Reads: SOURCE — a .csv/.npz path or a dataset name (digits, breast-cancer, wine, iris, mnist, …).
Writes: features float32 [N, D], labels int64 [N], ids int64 [N], synthetic bool [N]; attrs classes,
feature_names. Images are flattened.
"""

EPILOG = """Examples:

  knntools features data.csv --label-column Class -o train.h5

  knntools features breast-cancer --split test -o test.h5
"""


@handle_errors("features")
def features_cli(
    source: Annotated[str, typer.Argument(help="A .csv or .npz file, or a dataset name.")],
    output: OutputPath,
    label_column: LabelColumn = None,
    split: Split = "train",
    data_dir: DataDir = None,
    download: Download = False,
    test_size: Annotated[float, typer.Option("--test-size", help="Tables only: hold out this fraction (stratified, --seed) and write it to --test-output.", min=0.0, max=0.9)] = 0.0,
    test_output: Annotated[Optional[str], typer.Option("--test-output", help="Where to write the held-out part when --test-size > 0.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/test split.")] = 0,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    from pathlib import Path

    import numpy as np

    from knntools.errors import InputError
    from knntools.io import datasets as dsets
    from knntools.io.h5 import check_output_path
    from knntools.io.kinds import write_features

    out = Output("features", json_mode=json_, quiet=quiet, verbose=verbose)
    check_output_path(output, force)
    if test_size > 0:
        if not test_output:
            raise InputError("--test-size: expected --test-output PATH for the held-out rows")
        check_output_path(test_output, force)
    if Path(source).suffix.lower() in (".csv", ".npz", ".h5", ".hdf5"):
        data = dsets.load_table(source, label_column=label_column)
    else:
        data = dsets.load_dataset(source, split=split, data_dir=data_dir, download=download)
    if data.streaming:
        raise InputError(f"--dataset {source}: a folder image set is streamed, not held as a table; expected an in-memory set or a table (embed folder images with `knntools embed`)")
    X = data.X.reshape(len(data.X), -1).astype(np.float32)
    parts = {"train": np.arange(len(X))}
    if test_size > 0:
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(np.arange(len(X)), test_size=test_size, stratify=data.y, random_state=seed)
        parts = {"train": np.sort(tr), "test": np.sort(te)}
    fnames = data.feature_names or [f"x{i}" for i in range(X.shape[1])]
    written = []
    for part, rows in parts.items():
        dest = output if part == "train" else test_output
        write_features(dest, features=X[rows], labels=data.y[rows], classes=data.classes, ids=data.ids[rows],
                       feature_names=fnames, attrs={"dataset": data.name, "split": data.split if test_size == 0 else part},
                       seed=seed if test_size > 0 else None, force=force)
        written.append(str(dest))
        counts = np.bincount(data.y[rows], minlength=data.n_classes)
        out.info(f"{dest}: {len(rows)} rows × {X.shape[1]} features, classes " + ", ".join(f"{c}={n}" for c, n in zip(data.classes, counts)))
    out.result({"command": "features", "outputs": written, "n_features": int(X.shape[1]), "n_classes": data.n_classes,
                "n_samples": {p: int(len(r)) for p, r in parts.items()}}, written)
