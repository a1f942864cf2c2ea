"""Input checks shared by the commands that compare a network with its neighbours (``probe``, ``lasenn``).

Both read a training and a query activation file of one model and use the stored logits (the
network's output) next to one or more layers. :func:`check_activation_pair` is the one place that
checks such a pair before any work; the commands' options themselves are the shared aliases of
``_options.py`` and ``_search_options.py``. Light module: no numpy, torch or sklearn at import.
"""

from __future__ import annotations

from typing import Any, Sequence


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
