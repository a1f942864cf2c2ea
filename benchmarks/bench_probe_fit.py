"""CPU cost of the probe's SVM / LR fits: subsample + PCA (the defaults) vs the full fit.

    PYTHONPATH=. python benchmarks/bench_probe_fit.py TRAIN_ACTIVATIONS.h5 [--layer penultimate] [--sizes 2000 4000]

Fits ``knntools.methods.probe.LayerProbe`` (svm, lr) on the first-stratified ``n`` training rows
of one layer, once at full width (``pca_dim=None``) and once with PCA to 256 components, and
prints one CSV row per fit: rows, width, pca, classifier set, CPU seconds (``time.process_time``,
so other jobs on the machine do not inflate it), wall seconds and the LR/SVM convergence flags.
Liblinear's and lbfgs's cost grows about linearly with the rows at a fixed width, so the rows let
one extrapolate to the full training set.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("--layer", default="penultimate")
    ap.add_argument("--sizes", nargs="*", type=int, default=[2000, 4000])
    a = ap.parse_args(argv)
    from knntools.io.h5 import KFile
    from knntools.methods import probe as pb

    with KFile(a.train, kind="activations") as kf:
        name = kf.resolve_layers(a.layer)[0]
        y_all = kf.read_labels("labels")
        rows = pb.stratified_subsample(y_all, max(a.sizes), 0)
        X_all, y_all = kf.read_layer(name, rows), y_all[rows]
    print("layer,n,d,pca_dim,cpu_s,wall_s,converged")
    for n in a.sizes:
        r = pb.stratified_subsample(y_all, n, 0)
        X, y = X_all[r], y_all[r]
        for pca in (None, 256):
            cfg = pb.ProbeConfig(pca_dim=pca, fit_samples=None, random_state=0)
            c0, w0 = time.process_time(), time.perf_counter()
            probe = pb.LayerProbe(["svm", "lr"], int(y_all.max()) + 1, cfg).fit(X, y)
            print(f"{name},{n},{X.shape[1]},{pca or 0},{time.process_time() - c0:.1f},{time.perf_counter() - w0:.1f},"
                  f"{';'.join(f'{k}={v}' for k, v in probe.converged_.items())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
