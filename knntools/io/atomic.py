"""Atomic outputs: every file knntools writes appears complete or not at all.

:func:`atomic_path` yields a temporary path ``.<name>.<pid>@<host>.<8 hex>.partial`` beside the
destination and renames it over the destination only when the ``with`` block finishes without an
exception (including ``KeyboardInterrupt``); :func:`check_output_path` validates a destination
before any work is done; :func:`remove_stale_partials` removes the temporary files of killed runs.
The HDF5 writer :func:`knntools.io.h5.create` and every non-HDF5 output (checkpoints, PNG, CSV)
go through :func:`atomic_path`. (Moved here from :mod:`knntools.io.h5`, which re-exports these
names.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import uuid as _uuid
from pathlib import Path
from typing import Iterator

from knntools.errors import InputError, KnnToolsError

__all__ = ["atomic_path", "check_output_path", "partial_name", "remove_stale_partials"]



#: Temporary outputs are named ``.<name>.<pid>@<host>.<8 hex>.partial`` (see :func:`atomic_path`).
_PARTIAL_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[0-9a-f]{8}\.partial$")

#: errno values of a failed write (disk full, quota, file too large, read-only file system, I/O error)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}

#: Temporary paths yielded by :func:`atomic_path` that are still being written in this process.
_ACTIVE_TEMPS: set[Path] = set()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"


def partial_name(dest: Path) -> Path:
    """The temporary path :func:`atomic_path` writes before renaming it to ``dest``."""
    return dest.with_name(f".{dest.name}.{os.getpid()}@{_host()}.{_uuid.uuid4().hex[:8]}.partial")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary outputs in ``folder`` left by knntools runs that were killed.

    A process killed with SIGKILL (OOM killer, ``kill -9``, a scheduler's time limit) cannot remove
    its ``.<name>.<pid>@<host>.<hex>.partial`` file. Any later knntools command that writes into
    the same folder removes such files whose writer ``pid`` no longer runs on this host (files of
    live processes or of other hosts sharing the folder are kept). No reader takes a ``.partial``
    file for output: :class:`KFile` refuses them.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed: list[Path] = []
    host = _host()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _PARTIAL_RE.match(entry.name)
        if m is None or m["host"] != host or _pid_alive(int(m["pid"])) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Validate an output path before any work is done.

    Also removes stale temporary files of killed runs from the output folder
    (:func:`remove_stale_partials`) and checks that the folder is writable by creating and deleting
    a temporary file there (``os.access`` is not enough: root, read-only mounts, immutable folders).

    Raises
    ------
    InputError
        If the file exists and ``force`` is false, if it is a directory, if its folder does not
        exist or is not a folder, or if a file cannot be created in the folder.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: output path is a directory; expected a file path")
    if p.exists() and not force:
        raise InputError(f"{p}: output file exists; pass force to overwrite it", param="force")
    parent = p.parent
    if not parent.exists():
        # a regular file somewhere on the way makes exists() false too: name it
        for q in [parent, *parent.parents]:
            if q.exists() and not q.is_dir():
                raise InputError(f"{p}: {q} is a file, not a folder; expected an output path inside an existing folder")
        raise InputError(f"{p}: output folder {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{p}: {parent} is a file, not a folder; expected an output path inside an existing folder")
    if p in _ACTIVE_TEMPS:
        return p
    remove_stale_partials(parent)
    probe = partial_name(p)
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise InputError(f"{p}: cannot write to output folder {parent} ({exc.strerror or type(exc).__name__}); expected a writable folder") from None
    os.close(fd)
    os.unlink(probe)
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it to ``path`` on success.

    The temporary file is ``.<name>.<pid>@<host>.<8 hex>.partial`` beside the destination. On any
    exception (including ``KeyboardInterrupt``) it is removed and the destination is left
    untouched; after SIGKILL it stays until the next knntools run writing to that folder removes it
    (:func:`remove_stale_partials`). Used for non-HDF5 outputs (checkpoints, PNG, CSV) and by
    :func:`create`. Given a temporary path that an enclosing ``atomic_path`` of this process is
    writing, it yields that path unchanged (the enclosing block renames it), so temp names never nest.

    Raises
    ------
    InputError
        See :func:`check_output_path`.
    """
    dest = check_output_path(path, force)
    if dest in _ACTIVE_TEMPS:  # nested inside an enclosing atomic_path: it owns the rename
        yield dest
        return
    tmp = partial_name(dest)
    _ACTIVE_TEMPS.add(tmp)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            kept = "; the existing file is unchanged" if dest.exists() else ""
            raise KnnToolsError(f"{dest}: writing the output failed ({exc.strerror or exc}); nothing was written{kept}") from None
        if not tmp.exists():
            raise RuntimeError(f"{dest}: nothing was written")
        if dest.exists() and not force:  # appeared meanwhile
            raise InputError(f"{dest}: output file exists; pass force to overwrite it", param="force")
        os.replace(tmp, dest)
    finally:
        _ACTIVE_TEMPS.discard(tmp)
        if tmp.exists():
            tmp.unlink()
