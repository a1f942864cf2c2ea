"""kNN by sequence-to-sequence and memory networks (Xu & Klabjan, "k-Nearest Neighbors by Means of
Sequence to Sequence Deep Neural Networks and Memory Networks").

Five models mimic a K-nearest-neighbour classifier by predicting, for an input vector ``x``, the
labels ``Y_1^P … Y_K^P`` and/or the feature vectors ``X_1^P … X_K^P`` of its K nearest training
samples (the *kNN targets*, computed upfront), plus a final label ``Y^P``:

========== ================================================================ =======================
model      architecture (paper §3)                                          loss
========== ================================================================ =======================
v2ls       LSTM encoder over the length-1 sequence ``(x)``, LSTM decoder of  L1
           K steps; step t: ``Y_t^P = softmax((W y_t + b)/tau)``
v2vs       same, step t: ``X_t^P = W2 relu(W1 y_t + b1) + b2``              L2
v2vsls     both heads                                                       L1 + lam · L2
mnknn      end-to-end memory network, K hops over a memory of n random      L1
           training samples, a label after every hop
mnknn-vec  MNkNN plus ``X_t^P = W_x relu(T z_t) + b_x`` after every hop      L1 + lam · L2
========== ================================================================ =======================

with (§3, "V2LS" and "V2VS"), averaged over the samples of a mini-batch::

    L1 = sum_t KL(Y_t^T || Y_t^P) / K + alpha · KL(Y^GT || Y^P),   Y^P = sum_t Y_t^P / K
    L2 = sum_t ||X_t^P − X_t^T||²

``Y_t^T`` and ``Y^GT`` are one-hot (the t-th neighbour's label, the sample's own label), so each KL
is a cross-entropy; :func:`kl_divergence` also accepts soft targets.

Predictions: ``argmax Y^P`` for every model with a label head. V2VS has no label head; its label is
the majority vote of the labels of its K predicted vectors, each vector's label being the label of
its nearest *training* sample (1-NN in the standardised feature space through :mod:`knntools.search`,
:class:`ReferenceLabeler`, over every training row by default — ``label_bank`` restricts it to a
random bank, a documented deviation); ties go to the smallest class index.

Deviations from the paper, all off by default (see ``docs/seq2knn.md``): ``label_bank > 0``;
``memory_labels`` (label embedding in MNkNN memory values); ``attention_scale`` (1/sqrt(hidden) in
the MNkNN attention); ``memory_draws > 1`` (MNkNN predictions averaged over several memories);
``include_query=False`` (out-of-core sets S without the query).

kNN targets
-----------
:func:`full_neighbors` runs an exact (or hnsw) search of every training row against the whole
training set, excluding the row itself (:mod:`knntools.search`). :func:`out_of_core_neighbors` is
the paper's Algorithm 1: for each block of training rows, R random batches of B rows are drawn
(with replacement across batches) and the K nearest among the union of the sampled rows are found
by the exact backend of :mod:`knntools.search`, so only one query block and its sampled rows are
ever in memory; the rows can be an h5py dataset read from disk. The result equals exact K-NN over
the union of the sampled batches (plus the query itself, as in the paper, unless
``include_query=False``); ties go to the smaller row.

Defaults follow §4: K = 5, tau = 0.85, lam = 0.12, alpha = 9.5, Adam lr = 0.01, dropout 0.2,
batch normalisation, memory of n = 64 samples, R = 50, B = 64.
Everything here works on arrays/tensors: no files are opened and nothing is printed.

Package layout
--------------
``models.py`` (model names, networks, :func:`build_model`), ``losses.py`` (L1, L2),
``data.py`` (row access, :class:`Standardizer`, row views), ``targets.py`` (every neighbour search:
kNN targets, V2VS labelling, kNN benchmarks), ``training.py`` (:func:`train_model`,
:func:`predict`), ``checkpoint.py`` (:func:`checkpoint_dict`, :func:`load_checkpoint`) and
``pipeline.py`` (:func:`fit_seq2knn`, the whole run of ``knntools seq2knn`` in one call). Every
public name is importable from ``knntools.methods.seq2knn``.

Example
-------
>>> import numpy as np
>>> from knntools.io.datasets import load_dataset
>>> from knntools.methods.seq2knn import fit_seq2knn
>>> tr, te = load_dataset("breast-cancer", split="train"), load_dataset("breast-cancer", split="test")
>>> run = fit_seq2knn(tr.X, tr.y, 2, model="v2vsls", K=5, epochs=2, X_test=te.X, y_test=te.y)  # doctest: +SKIP
>>> sorted(run.test)  # doctest: +SKIP
['ffn', 'knn', 'v2vsls']
"""

from __future__ import annotations

from knntools.methods import check_labels
from knntools.methods.seq2knn.checkpoint import (
    CHECKPOINT_BANK_ROWS,
    CHECKPOINT_FORMAT,
    CHECKPOINT_KIND,
    CHECKPOINT_VERSION,
    checkpoint_dict,
    load_checkpoint,
)
from knntools.methods.seq2knn.data import RowView, Standardizer, SubsetRows, stream_moments, take_rows
from knntools.methods.seq2knn.losses import combined_loss, kl_divergence, label_loss, vector_loss
from knntools.methods.seq2knn.models import (
    DEFAULTS,
    LABEL_MODELS,
    MEMORY_MODELS,
    MODELS,
    OVERSAMPLE_DEFAULTS,
    VECTOR_MODELS,
    build_model,
    check_model_name,
)
from knntools.methods.seq2knn.pipeline import Seq2KNNRun, fit_seq2knn, split_validation
from knntools.methods.seq2knn.targets import (
    ReferenceLabeler,
    full_neighbors,
    knn_predict,
    knn_predict_batch,
    knn_vote,
    nearest_in_rows,
    out_of_core_neighbors,
)
from knntools.methods.seq2knn.training import ModelSettings, TrainResult, macro_f1, predict, train_model

__all__ = [
    "CHECKPOINT_BANK_ROWS", "CHECKPOINT_FORMAT", "CHECKPOINT_KIND", "CHECKPOINT_VERSION", "DEFAULTS", "LABEL_MODELS",
    "MEMORY_MODELS", "MODELS", "ModelSettings", "OVERSAMPLE_DEFAULTS", "VECTOR_MODELS", "ReferenceLabeler", "RowView",
    "Seq2KNNRun", "Standardizer", "SubsetRows", "TrainResult", "build_model", "check_labels", "check_model_name",
    "checkpoint_dict", "combined_loss", "fit_seq2knn", "full_neighbors", "kl_divergence", "knn_predict", "knn_predict_batch",
    "knn_vote", "label_loss", "load_checkpoint", "macro_f1", "nearest_in_rows", "out_of_core_neighbors", "predict",
    "split_validation", "stream_moments", "take_rows", "train_model", "vector_loss",
]
