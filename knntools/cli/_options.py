"""Shared typer options, defined once and reused by every command (``Annotated`` aliases).

Flags mean the same thing everywhere: ``-o/--output``, ``--force``, ``--seed``, ``--device``,
``--json``, ``-q/--quiet``, ``-v/--verbose``, ``-k/--n-neighbors``, ``--batch-size``,
``--num-threads``, ``--dataset``, ``--data-dir``, ``--download``, ``--split``, ``--workers``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

OutputPath = Annotated[Path, typer.Option("-o", "--output", help="Output file (written atomically; refused if it exists unless --force).", dir_okay=False)]
OptOutputPath = Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (written atomically; refused if it exists unless --force).", dir_okay=False)]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same output bytes.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (auto picks CUDA when present).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON summary object on stdout.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="No messages or progress on stderr (errors still print).")]
Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="More detail; full traceback on errors.")]
K = Annotated[int, typer.Option("-k", "--n-neighbors", help="Number of nearest neighbours k.", min=1)]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Samples per batch.", min=1)]
NumThreads = Annotated[int, typer.Option("--num-threads", help="CPU threads (0 = all cores).", min=0)]
DatasetName = Annotated[str, typer.Option("--dataset", help="digits (default, bundled), breast-cancer, wine, iris, mnist, fashion-mnist, kmnist, cifar10, cifar100, svhn, imagefolder (--data-dir DIR/<class>/<image>, or DIR/train + DIR/test|val), imagenet, or a .csv/.npz/.h5 table.")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder with the dataset files (raw IDX .gz files, torchvision layout, or an ImageFolder tree).", file_okay=False)]
Workers = Annotated[int, typer.Option("--workers", help="DataLoader worker processes decoding images of folder sets (imagefolder, imagenet); 0 = in this process. In-memory sets ignore it.", min=0)]
Download = Annotated[bool, typer.Option("--download", help="Download the dataset with torchvision if it is missing (needs internet).")]
Split = Annotated[str, typer.Option("--split", help="Dataset split: train | test.")]
LabelColumn = Annotated[Optional[str], typer.Option("--label-column", help="CSV column holding the labels (default: label/target/class/y, else the last).")]
InputFile = Annotated[Path, typer.Argument(help="Input knntools HDF5 file.", dir_okay=False)]
