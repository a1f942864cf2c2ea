"""Disk full / write errors: a write that fails half-way leaves no output and keeps the old file.

The writers are patched in-process to write part of the file and then raise ``OSError(ENOSPC)``
(what a full disk or quota gives); the command must exit 1 with one line naming the output and
what failed, leave no temporary file, and keep an existing output (--force) byte for byte.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from .cases import WRITERS
from .conftest import record
from .harness import diff, run_inprocess, snapshot

OLD = b"the previous output: a failed write must leave it unchanged\n"


def _argv(argv, inputs, out):
    return [str(inputs[a[1:]]) if a.startswith("@") else a.replace("{o}", str(out)) for a in argv]


def _enospc():
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def fail_h5_writes(monkeypatch):
    """The 2nd dataset written into any knntools HDF5 file fails with ENOSPC (the 1st is written)."""
    import h5py

    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def create_dataset(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise _enospc()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    return calls


@pytest.fixture
def fail_torch_save(monkeypatch):
    """torch.save writes 100 bytes, then fails with ENOSPC."""
    import torch

    def save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04" + b"\0" * 96)
        raise _enospc()

    monkeypatch.setattr(torch, "save", save)


H5_WRITERS = ("noise", "features", "embed", "index-query", "oversample", "dknn", "lasenn", "distill-knet-eval", "probe")
PT_WRITERS = ("train", "seq2knn", "distill-knet")


def _check(name: str, inputs, tmp_path: Path) -> None:
    argv, suffix = WRITERS[name]
    out = tmp_path / f"out{suffix}"
    out.write_bytes(OLD)
    before = snapshot(tmp_path, inputs["m.pt"].parent)
    r = run_inprocess(_argv(argv, inputs, out) + ["--force"], tmp_path)
    new, changed, removed = diff(before, snapshot(tmp_path, inputs["m.pt"].parent))
    new = [p for p in new if not p.endswith(".metrics.csv")] if name == "train" else new
    lines = r.stderr_lines
    err = [line for line in lines if ": error:" in line]
    record({"kind": "write-error", "id": name, "code": r.code, "exit_ok": r.code == 1, "one_line": len(err) == 1 and lines[-1] == err[0],
            "traceback": "Traceback" in r.stderr, "new_files": len(new), "partials": sum(p.endswith(".partial") for p in new),
            "changed": len(changed) + len(removed), "clean": r.code == 1 and not new and not changed and len(err) == 1})
    assert r.code == 1, r.stderr
    assert len(err) == 1 and lines[-1] == err[0] and "Traceback" not in r.stderr, r.stderr
    assert str(out) in err[0] and "No space left on device" in err[0] and "unchanged" in err[0], err[0]
    assert not new and not changed and not removed, (new, changed, removed)
    assert out.read_bytes() == OLD


@pytest.mark.parametrize("name", H5_WRITERS)
def test_h5_write_fails_halfway(name: str, inputs, tmp_path: Path, fail_h5_writes) -> None:
    _check(name, inputs, tmp_path)


@pytest.mark.parametrize("name", PT_WRITERS)
def test_checkpoint_write_fails_halfway(name: str, inputs, tmp_path: Path, fail_torch_save) -> None:
    _check(name, inputs, tmp_path)
