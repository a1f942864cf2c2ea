"""Input checks shared by the commands that read a training file together with a second file.

:func:`check_activation_pair` checks the training and query activation files of the commands that
compare a network with its neighbours (``probe``, ``lasenn``): both use the stored logits (the
network's output) next to one or more layers; it is the one place that checks such a pair before any
work. :func:`data_layer` and :func:`open_eval` are the one place where ``seq2knn`` and ``oversample``
pick the data layer of a features or activations file and open their ``--eval`` file against it.
The commands' options themselves are the shared aliases of ``_options.py`` and
``_search_options.py``. Light module: no numpy, torch or sklearn at import.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional, Sequence


def check_activation_pair(train: Any, test: Any | None, layers: Sequence[str], *, labels: bool = False) -> None:
    """Check a training activation file and its query file (or the training file alone).

    Parameters
    ----------
    train, test : knntools.io.h5.KFile (``test`` may be None)
    layers : names already resolved in ``train``; each must exist with the same width in ``test``
    labels : also require a ``labels`` dataset in each file

    Raises
    ------
    InputError
        A file without ``logits`` (or ``labels``), a layer missing or of another width in ``test``,
        another model or class list, or logits with a different number of classes.
    """
    from knntools.errors import InputError
    from knntools.io.h5 import check_same_source

    for f in (train, test):
        if f is None:
            continue
        if not f.has("logits"):
            raise InputError(f"{f.path}: dataset 'logits' not found; expected the network's logits (re-run `knntools embed`)")
        if labels and not f.has("labels"):
            raise InputError(f"{f.path}: dataset 'labels' not found; expected the labels")
    if test is None:
        return
    for name in layers:
        test.layer_path(name)
    check_same_source(train, test, list(layers))
    c_tr, c_te = train.dataset("logits").shape[1], test.dataset("logits").shape[1]
    if c_tr != c_te:
        raise InputError(f"{test.path}: logits have {c_te} classes but {train.path} has {c_tr}; expected the same classes")


def data_layer(kf: Any, layer: str) -> str:
    """The one data layer of a features file (``features``) or an activations file (``layer`` resolved)."""
    return kf.resolve_layers("features" if kf.kind == "features" else layer, single=True)[0]


def open_eval(stack: contextlib.ExitStack, eval_file: Optional[Path], train: Any, layer: str, *,
              n_classes: Optional[int] = None) -> tuple[Any, Optional[str]]:
    """Open ``--eval`` (same kind as TRAIN) on ``stack`` and check it against TRAIN's data layer.

    Parameters
    ----------
    stack : contextlib.ExitStack   keeps the file open until the command is done with it
    eval_file : path or None       None: nothing is opened, ``(None, None)`` is returned
    train : knntools.io.h5.KFile   the training file
    layer : str                    TRAIN's data layer (:func:`data_layer`)
    n_classes : int, optional      also check that the evaluation file's ground-truth labels
                                   (``KFile.truth_labels``) lie in ``[0, n_classes)``

    Returns
    -------
    (KFile, str) or (None, None)
        The open evaluation file and its data layer.

    Raises
    ------
    InputError
        Another kind of file, a data layer of another width, another class list, or (with
        ``n_classes``) labels out of range.
    """
    from knntools.errors import InputError
    from knntools.io.h5 import KFile

    if eval_file is None:
        return None, None
    kt = stack.enter_context(KFile(eval_file, train.kind))
    tl = data_layer(kt, layer)
    D = train.layer_dim(layer)
    if kt.layer_dim(tl) != D:
        raise InputError(f"{eval_file}: {tl} has {kt.layer_dim(tl)} features but {train.path} has {D}; expected the same width")
    if train.classes and kt.classes and train.classes != kt.classes:
        raise InputError(f"{eval_file}: classes {kt.classes} differ from {train.path}'s {train.classes}; expected the same classes")
    if n_classes is not None:
        yt = kt.truth_labels()
        if yt.size and yt.max() >= n_classes:
            raise InputError(f"{eval_file}: labels reach {yt.max()}; expected labels in [0, {n_classes}) as in {train.path}")
    return kt, tl
