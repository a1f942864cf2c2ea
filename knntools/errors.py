"""Exceptions shared by every layer.

The CLI maps them to exit codes: :class:`InputError` (bad input or usage) exits with 2,
any other :class:`KnnToolsError` (runtime failure) exits with 1. Messages are one line and name
the file, the field and what was expected, e.g.
``train.h5: layers/fc9: not found (available: conv1, conv2, logits)``.
"""

from __future__ import annotations


class KnnToolsError(Exception):
    """A failure with a user-facing one-line message (CLI exit code 1)."""

    exit_code = 1


class InputError(KnnToolsError, ValueError):
    """Bad input: a file, field, option value or combination that is not what was expected (exit 2)."""

    exit_code = 2


class SchemaError(InputError):
    """An HDF5 file that is not a valid knntools file of the expected kind/version (exit 2)."""
