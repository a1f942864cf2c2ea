"""knntools: composable command-line tools for deep k-nearest-neighbour methods.

The package is library-first: every subcommand is a thin CLI wrapper (``knntools.cli``) around
array-level methods (``knntools.methods``), the search layer (``knntools.search``), models
(``knntools.models``) and one HDF5 file format (``knntools.io``).
"""

import os as _os

# OpenBLAS (numpy's BLAS) keeps its worker threads busy-waiting for 2**28 cycles (about 0.1 s)
# after every GEMM. The exact search follows each GEMM tile with a top-k selection on torch's
# threads; on a 2-core machine the spinning threads halve that selection's speed (measured: the
# selection after a 60,000 x 10,000, d = 256 GEMM took 0.79 s, 0.41 s with the timeout at 2**20
# cycles, about 0.3 ms). OpenBLAS reads the variable when it loads, so this only applies when
# knntools is imported before numpy (always the case for the ``knntools`` command); a value the
# user set is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

__version__ = "0.1.0"

__all__ = ["__version__"]
