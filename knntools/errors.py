"""Exceptions shared by every layer.

The CLI maps them to exit codes: :class:`InputError` (bad input or usage) exits with 2,
any other :class:`KnnToolsError` (runtime failure) exits with 1. Messages are one line and name
the file, the field and what was expected, e.g.
``train.h5: layers/fc9: not found (available: conv1, conv2, logits)``.

Core code (methods/, search/, models/, io/) describes the *value*, never a command-line flag:
``noise rate 1.5: expected a number in [0, 1]``. When the bad value came in through a
parameter, the error carries its Python name (``InputError(msg, param="rate")``); the CLI then
prefixes the message with the command's matching option (``--rate: noise rate 1.5: ...``, see
:func:`knntools.cli._errors.handle_errors`). From Python the message stays as written.
"""

from __future__ import annotations


class KnnToolsError(Exception):
    """A failure with a user-facing one-line message (CLI exit code 1)."""

    exit_code = 1


class InputError(KnnToolsError, ValueError):
    """Bad input: a file, field, option value or combination that is not what was expected (exit 2).

    Parameters
    ----------
    message : str
        One line describing the value and what was expected, without command-line flags.
    param : str or None, default None
        Python name of the parameter the bad value came in through (e.g. ``"rate"``,
        ``"data_dir"``). The CLI maps it to the running command's option of that name and
        prefixes the flag (``--data-dir: ...``); ``None`` when no single parameter is at fault.
    """

    exit_code = 2

    def __init__(self, message: object = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class SchemaError(InputError):
    """An HDF5 file that is not a valid knntools file of the expected kind/version (exit 2)."""
