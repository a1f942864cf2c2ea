"""I/O: the HDF5 format (:mod:`knntools.io.h5`) and dataset loaders (:mod:`knntools.io.datasets`)."""
