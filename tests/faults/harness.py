"""Helpers of the fault suite: build the good inputs once, run a command in-process or as a real
process, and take a snapshot (names and SHA-256) of the folders a run may touch.

A *case* is one command line that must fail cleanly: the expected exit code, exactly one stderr
line without a traceback, no new file (no output, no ``.partial``) and every pre-existing file
unchanged. See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------------------------------
# Running a command
# ------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one command run did: exit code, stdout and stderr text, wall time."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_inprocess(argv: list[str], cwd: Path) -> Run:
    """Run ``knntools.cli.main(argv)`` in this process with ``cwd`` as working folder.

    stdout/stderr are captured at the Python level (``sys.stdout``/``sys.stderr``); warnings are
    shown every time (``always``) so a warning counts as an extra stderr line here as it would in a
    fresh process. The exit code is the ``SystemExit`` code of ``main``.
    """
    from knntools.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    t0 = time.perf_counter()
    code = 0
    os.chdir(cwd)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            try:
                main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(old)
    return Run(code, out.getvalue(), err.getvalue(), time.perf_counter() - t0)


def run_process(argv: list[str], cwd: Path, timeout: float = 300) -> Run:
    """Run ``python -m knntools ARGV`` as a real process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "knntools", *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)


def popen(argv: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``python -m knntools ARGV`` (stdout/stderr piped, bytes) for kill tests."""
    return subprocess.Popen([sys.executable, "-m", "knntools", *map(str, argv)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ------------------------------------------------------------------------------------------
# Snapshots
# ------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(*folders: Path) -> dict[str, str]:
    """``{path: sha256}`` of every file under ``folders`` (hidden ones included; a folder maps to ``"<dir>"``)."""
    snap: dict[str, str] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for d in dirs:
                snap[os.path.join(root, d)] = "<dir>"
            for f in files:
                p = os.path.join(root, f)
                snap[p] = sha256(Path(p)) if os.path.isfile(p) else "<other>"
    return snap


def diff(before: dict[str, str], after: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(new files, changed files, removed files) between two snapshots."""
    new = sorted(set(after) - set(before))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    removed = sorted(set(before) - set(after))
    return new, changed, removed


# ------------------------------------------------------------------------------------------
# Good and bad input files (built once per session)
# ------------------------------------------------------------------------------------------


class Evil:
    """Unpickling this object would create the file ``MARKER`` (the payload must never run)."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def copy_with(src: Path, dst: Path, edit) -> Path:
    """Copy an HDF5 file and apply ``edit(h5py.File)`` to the copy."""
    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def corrupt_middle(src: Path, dst: Path, n_bytes: int = 4096) -> Path:
    """Copy ``src`` with ``n_bytes`` in the middle of the file overwritten by 0xA5 bytes (a damaged copy)."""
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n_bytes] = b"\xa5" * min(n_bytes, len(data) - mid)
    dst.write_bytes(bytes(data))
    return dst


def build_inputs(g: Path) -> dict[str, Path]:
    """Make the good inputs with the real commands (in-process), then the bad ones from them.

    Good: ``m.pt`` (digits MLP, 1 epoch), ``tr.h5``/``te.h5`` (its activations), ``lab.h5``
    (noise labels), ``table.csv`` → ``feat.h5``/``featte.h5`` (features), ``knet.pt`` (kNet),
    ``s2k.pt`` (seq2knn on the features). Bad: see the keys below.
    """
    import h5py
    import torch

    g.mkdir(parents=True, exist_ok=True)

    def ok(*argv: str) -> None:
        r = run_inprocess(list(argv), g)
        assert r.code == 0, f"building {argv}: exit {r.code}: {r.stderr}"

    ok("train", "--arch", "mlp", "--arch-kwargs", '{"hidden": 32}', "--epochs", "1", "--num-threads", "1", "-o", "m.pt", "-q")
    ok("embed", "m.pt", "--split", "train", "-o", "tr.h5", "-q", "--num-threads", "1")
    ok("embed", "m.pt", "--split", "test", "-o", "te.h5", "-q", "--num-threads", "1")
    ok("noise", "--rate", "0.2", "-o", "lab.h5", "-q")
    rng = np.random.default_rng(0)
    n = 160
    y = (rng.random(n) < 0.25).astype(int)
    X = rng.normal(size=(n, 4)) + y[:, None] * 1.5
    lines = ["a,b,c,d,y"] + [",".join(f"{v:.5f}" for v in row) + f",{t}" for row, t in zip(X, y)]
    (g / "table.csv").write_text("\n".join(lines) + "\n")
    ok("features", "table.csv", "--label-column", "y", "--test-size", "0.3", "--test-output", "featte.h5", "-o", "feat.h5", "-q")
    ok("distill-knet", "tr.h5", "--layer", "penultimate", "--k-range", "1:11", "--epochs", "1", "--hidden", "4", "--num-threads", "1", "-o", "knet.pt", "-q")
    ok("seq2knn", "feat.h5", "--model", "v2vsls", "-k", "3", "--epochs", "1", "--hidden", "4", "--num-threads", "1", "-o", "s2k.pt", "-q")

    p = {name: g / name for name in ("m.pt", "tr.h5", "te.h5", "lab.h5", "table.csv", "feat.h5", "featte.h5", "knet.pt", "s2k.pt")}
    # ---- bad files ------------------------------------------------------------------------
    (g / "notes.txt").write_text("this is not an HDF5 file\n")
    p["notes.txt"] = g / "notes.txt"
    data = p["te.h5"].read_bytes()
    (g / "trunc.h5").write_bytes(data[: len(data) // 2])  # `head -c` of a good file
    p["trunc.h5"] = g / "trunc.h5"
    p["corrupt.h5"] = corrupt_middle(p["te.h5"], g / "corrupt.h5")
    shutil.copyfile(p["te.h5"], g / ".te.h5.1@host.0123abcd.partial")  # what a killed writer leaves
    p["corrupt.h5.partial"] = g / ".te.h5.1@host.0123abcd.partial"
    p["corrupt_tr.h5"] = corrupt_middle(p["tr.h5"], g / "corrupt_tr.h5")
    p["v9.h5"] = copy_with(p["te.h5"], g / "v9.h5", lambda f: f.attrs.__setitem__("format_version", 9))
    p["notknn.h5"] = g / "notknn.h5"
    with h5py.File(p["notknn.h5"], "w") as f:
        f["x"] = np.zeros(3)

    def put_nan(f):
        name = "layers/" + json.loads(f.attrs["layer_order"])[-1]
        a = f[name][...]
        a[3, 1] = np.nan
        a[5, 0] = np.inf
        f[name][...] = a

    p["nan.h5"] = copy_with(p["te.h5"], g / "nan.h5", put_nan)

    def bad_labels(f):
        a = f["labels"][...]
        a[0] = 99
        f["labels"][...] = a
        if "labels_clean" in f:
            f["labels_clean"][...] = a

    p["badlab.h5"] = copy_with(p["te.h5"], g / "badlab.h5", bad_labels)
    def bad_labels_no_classes(f):  # out of range, and no `classes` list that read_labels could check
        bad_labels(f)
        del f.attrs["classes"]

    p["badlab_nocls.h5"] = copy_with(p["te.h5"], g / "badlab_nocls.h5", bad_labels_no_classes)
    p["badlab_tr.h5"] = copy_with(p["tr.h5"], g / "badlab_tr.h5", bad_labels)
    p["othermodel.h5"] = copy_with(p["te.h5"], g / "othermodel.h5", lambda f: f.attrs.__setitem__("model_uuid", "another-model"))

    def wider(f):  # same model id, a layer of a different width
        name = "layers/" + json.loads(f.attrs["layer_order"])[-1]
        a = f[name][...]
        del f[name]
        ds = f.create_dataset(name, data=np.concatenate([a, a[:, :3]], axis=1))
        ds.attrs["axis0"] = "samples"

    p["wider.h5"] = copy_with(p["te.h5"], g / "wider.h5", wider)
    p["kind_labels.h5"] = p["lab.h5"]
    (g / "empty.csv").write_text("")
    p["empty.csv"] = g / "empty.csv"
    (g / "nonnum.csv").write_text("a,b,y\n1.0,x,0\n2.0,y,1\n3.0,z,0\n4.0,w,1\n")
    p["nonnum.csv"] = g / "nonnum.csv"
    (g / "header.csv").write_text("a,b,y\n")
    p["header.csv"] = g / "header.csv"
    Evil.marker = str(g / "PWNED")
    torch.save({"format": "knntools-model", "payload": Evil()}, g / "evil.pt")
    p["evil.pt"] = g / "evil.pt"
    p["marker"] = g / "PWNED"
    (g / "trunc.pt").write_bytes(p["m.pt"].read_bytes()[:1000])
    p["trunc.pt"] = g / "trunc.pt"
    # shards of the test split (merge, sets): good halves, a third overlapping them, another model's half
    ok("embed", "m.pt", "--split", "test", "--shard", "0/2", "-o", "sh0.h5", "-q", "--num-threads", "1")
    ok("embed", "m.pt", "--split", "test", "--shard", "1/2", "-o", "sh1.h5", "-q", "--num-threads", "1")
    ok("embed", "m.pt", "--split", "test", "--shard", "1/3", "-o", "sh1of3.h5", "-q", "--num-threads", "1")
    for name in ("sh0.h5", "sh1.h5", "sh1of3.h5"):
        p[name] = g / name
    p["sh1_other.h5"] = copy_with(p["sh1.h5"], g / "sh1_other.h5", lambda f: f.attrs.__setitem__("model_uuid", "another-model"))
    # a virtual set whose second part has gone missing
    (g / "broken_set").mkdir()
    shutil.copyfile(p["sh0.h5"], g / "broken_set" / "a.h5")
    shutil.copyfile(p["sh1.h5"], g / "broken_set" / "b.h5")
    ok("merge", "--virtual", "broken_set/a.h5", "broken_set/b.h5", "-o", "broken_set/set.h5", "-q")
    (g / "broken_set" / "b.h5").unlink()
    p["set_missing_part.h5"] = g / "broken_set" / "set.h5"
    return p
