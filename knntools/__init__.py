"""knntools: composable command-line tools for deep k-nearest-neighbour methods.

The package is library-first: every subcommand is a thin CLI wrapper (``knntools.cli``) around
array-level methods (``knntools.methods``), the search layer (``knntools.search``), models
(``knntools.models``) and one HDF5 file format (``knntools.io``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
