"""Shared typer options, defined once and reused by every command (``Annotated`` aliases).

Flags mean the same thing everywhere: ``-o/--output``, ``--force``, ``--seed``, ``--device``,
``--json``, ``-q/--quiet``, ``-v/--verbose``, ``-k/--n-neighbors``, ``--k-sweep``, ``--layers``,
``--layer``, ``--batch-size``, ``--num-threads``, ``--dataset``, ``--data-dir``, ``--download``,
``--split``, ``--workers``.

k contract (issue 18): one neighbour count is ``K`` (``-k/--n-neighbors``); a list of ks is
``KSweep`` (``--k-sweep``, parsed by :func:`parse_k_list`); the bound k <= candidate rows is
checked once, in the core, by :func:`knntools.search.base.check_k`. Layers: several layers are
``Layers`` (``--layers SPEC``), exactly one is ``Layer`` (``--layer NAME``); both are resolved by
:func:`knntools.layerspec.resolve_layer_spec`.
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
KSweep = Annotated[str, typer.Option("--k-sweep", help="ks to evaluate: a list 1,11,51,101 or LOW:HIGH[:STEP].")]
Layers = Annotated[str, typer.Option("--layers", help="Layers: all | hidden | penultimate | NAME[,NAME...].")]
Layer = Annotated[str, typer.Option("--layer", help="Layer: penultimate | logits | NAME.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Samples per batch.", min=1)]
NumThreads = Annotated[int, typer.Option("--num-threads", help="CPU threads (0 = all cores).", min=0)]
DatasetName = Annotated[str, typer.Option("--dataset", help="digits (default, bundled), breast-cancer, wine, iris, mnist, fashion-mnist, kmnist, cifar10, cifar100, svhn, imagefolder (--data-dir DIR/<class>/<image>, or DIR/train + DIR/test|val), imagenet, or a .csv/.npz/.h5 table.")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder with the dataset files (raw IDX .gz files, torchvision layout, or an ImageFolder tree).", file_okay=False)]
Workers = Annotated[int, typer.Option("--workers", help="DataLoader worker processes decoding images of folder sets (imagefolder, imagenet); 0 = in this process. In-memory sets ignore it.", min=0)]
Download = Annotated[bool, typer.Option("--download", help="Download the dataset with torchvision if it is missing (needs internet).")]
Split = Annotated[str, typer.Option("--split", help="Dataset split: train | test.")]
LabelColumn = Annotated[Optional[str], typer.Option("--label-column", help="CSV column holding the labels (default: label/target/class/y, else the last).")]
InputFile = Annotated[Path, typer.Argument(help="Input knntools HDF5 file.", dir_okay=False)]


def parse_k_list(text: str, option: str = "--k-sweep") -> list[int]:
    """Parse a k sweep: a list ``1,11,51,101`` or an inclusive range ``LOW:HIGH[:STEP]``.

    A range always ends with HIGH (``1:10:4`` gives 1, 5, 9, 10). The result is sorted and
    without repeats; the bound against the candidate rows is the core's
    (:func:`knntools.search.base.check_k`).

    Parameters
    ----------
    text : str
    option : str, default "--k-sweep"
        Named in the error message.

    Returns
    -------
    list of int
        Sorted unique ks, each >= 1.

    Raises
    ------
    InputError
        Text that is neither form, LOW > HIGH, STEP < 1, or a k < 1.
    """
    from knntools.errors import InputError

    text = str(text).strip()
    if ":" in text:
        try:
            nums = [int(p) for p in text.split(":")]
        except ValueError:
            raise InputError(f"{option} {text!r}: expected a list 1,11,51,101 or LOW:HIGH[:STEP] integers, e.g. 1:101:5") from None
        if len(nums) not in (2, 3) or nums[0] > nums[1] or (len(nums) == 3 and nums[2] < 1):
            raise InputError(f"{option} {text!r}: expected LOW:HIGH[:STEP] with LOW <= HIGH and STEP >= 1")
        ks = list(range(nums[0], nums[1] + 1, nums[2] if len(nums) == 3 else 1))
        if ks[-1] != nums[1]:
            ks.append(nums[1])
    else:
        try:
            ks = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise InputError(f"{option} {text!r}: expected a list 1,11,51,101 or LOW:HIGH[:STEP] integers") from None
        if not ks:
            raise InputError(f"{option}: expected at least one k, e.g. 1,11,51,101 or 1:101:10")
    if min(ks) < 1:
        raise InputError(f"{option} {text!r}: k must be >= 1")
    return sorted(set(ks))
