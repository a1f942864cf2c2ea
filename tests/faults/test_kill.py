"""Kill tests: commands started as real processes and stopped with SIGKILL or SIGINT mid-run.

Promise (docs/reliability.md): an interrupted run leaves no output and never changes an existing
one (given with --force); SIGINT removes its temporary file and exits 130 with one line; after
SIGKILL the only thing that may remain is a ``.<name>.<pid>@<host>.<hex>.partial`` temporary file
of the dead process, which the next knntools run writing to that folder removes
(:func:`knntools.io.h5.check_output_path`) and which no reader accepts. ``train --resume``
continues from the last complete step checkpoint after a kill.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
import zlib
from pathlib import Path

import pytest

from .cases import WRITERS
from .conftest import record
from .harness import popen, run_inprocess

KILLED = ("train", "embed", "index-query", "dknn", "distill-knet", "seq2knn")
PARTIAL = re.compile(r"^\..+\.(\d+)@[A-Za-z0-9-]+\.[0-9a-f]{8}\.partial$")
OLD = b"the previous output: an interrupted run must leave it unchanged\n"


def _argv(name: str, inputs: dict[str, Path], out: Path) -> list[str]:
    argv, _ = WRITERS[name]
    res = []
    for a in argv:
        res.append(str(inputs[a[1:]]) if a.startswith("@") else a.replace("{o}", str(out)))
    return res + ["--force"]


def _stop(proc, sig: int, when: str, delay: float, folder: Path, deadline: float = 120.0) -> str:
    """Send ``sig`` at a point of the run: ``when='work'``: ``delay`` s after the command's first
    stderr line (imports done, inputs opened, work under way); ``when='partial'``: ``delay`` s after
    a ``.partial`` file appears (the output half written). Returns 'signalled' or 'finished'."""
    import selectors

    t0 = time.monotonic()
    seen = None
    err: list[bytes] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    os.set_blocking(proc.stderr.fileno(), False)
    while proc.poll() is None and time.monotonic() - t0 < deadline:
        if seen is None:
            if when == "partial" and any(PARTIAL.match(n) for n in os.listdir(folder)):
                seen = time.monotonic()
            elif when == "work" and sel.select(timeout=0):
                chunk = proc.stderr.read(4096)
                if chunk:
                    err.append(chunk)
                    seen = time.monotonic()
        if seen is not None and time.monotonic() - seen >= delay:
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    sel.close()
    os.set_blocking(proc.stderr.fileno(), True)
    err.append(proc.communicate(timeout=60)[1] or b"")
    return ("signalled" if seen is not None else "finished"), b"".join(err).decode(errors="replace")


def _assert_complete(path: Path) -> None:
    """``path`` is a complete knntools output (HDF5 opened and validated, or a checkpoint loaded)."""
    if path.suffix == ".pt":
        import torch

        assert isinstance(torch.load(path, weights_only=True), dict)
    else:
        from knntools.io.h5 import KFile

        with KFile(path) as kf:
            for name in ("predictions", "ids", "labels"):
                if kf.has(name):
                    kf.read(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", KILLED)
def test_kill(name: str, inputs, tmp_path: Path) -> None:
    rng = random.Random(zlib.crc32(name.encode()))  # seeded per command
    suffix = WRITERS[name][1]
    out = tmp_path / f"out{suffix}"
    # seeded points: while the temp output is being written (the risky moment), then Ctrl-C there
    plans = [("SIGKILL", signal.SIGKILL, "partial", rng.uniform(0.0, 0.02)),
             ("SIGKILL", signal.SIGKILL, "work", rng.uniform(0.0, 0.5)),
             ("SIGINT", signal.SIGINT, "work", rng.uniform(0.0, 0.3))]
    for label, sig, when, delay in plans:
        out.write_bytes(OLD)
        before = {p.name for p in tmp_path.iterdir()}
        proc = popen(_argv(name, inputs, out), tmp_path)
        what, stderr = _stop(proc, sig, when, delay, tmp_path)
        after = {p.name for p in tmp_path.iterdir()}
        new = sorted(after - before)
        strays = [n for n in new if PARTIAL.match(n)]
        entry = {"kind": "kill", "id": f"{name}/{label}/{when}/{delay:.3f}", "code": proc.returncode, "outcome": what,
                 "partials": len(strays) if sig != signal.SIGKILL else 0, "stray_after_kill": len(strays),
                 "changed": int(what == "signalled" and out.read_bytes() != OLD), "new_files": len(set(new) - set(strays))}
        if what == "finished" or out.read_bytes() != OLD:
            # the run renamed its output before the signal landed: then it must be the new, complete file
            _assert_complete(out)
            assert not set(new) - set(strays) - {"out.metrics.csv"}, new
            entry.update(outcome="completed before the signal", changed=0, new_files=0, clean=True)
            record(entry)
            continue
        assert not set(new) - set(strays), f"{name} {label}: new files {new}"
        if sig == signal.SIGINT:
            assert proc.returncode == 130, (proc.returncode, stderr)
            assert "Traceback" not in stderr and "interrupted" in stderr.strip().splitlines()[-1], stderr
            assert not strays, f"{name} SIGINT left {strays}"
        else:
            assert proc.returncode == -signal.SIGKILL
            for s in strays:  # named after the dead writer: the next writer into this folder removes it
                assert int(PARTIAL.match(s).group(1)) == proc.pid and s.count(".partial") == 1, s
        entry["clean"] = True
        record(entry)
    # the next run writing into the folder removes the dead writers' temp files before working
    from knntools.io.h5 import check_output_path

    check_output_path(tmp_path / "next.h5")
    assert not [n for n in os.listdir(tmp_path) if PARTIAL.match(n)]
    assert out.exists()


def test_next_run_removes_stale_partials(inputs, tmp_path: Path) -> None:
    """A killed writer's temp file (dead pid, this host) is removed by the next command writing there;
    one of a live process is kept; a `.partial` file is never read as input."""
    from knntools.io.h5 import _host

    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
    stale = tmp_path / f".labels.h5.{dead}@{_host()}.0123abcd.partial"
    live = tmp_path / f".labels.h5.{os.getpid()}@{_host()}.89abcdef.partial"
    other_host = tmp_path / f".labels.h5.{dead}@another-host.0123abcd.partial"
    for p in (stale, live, other_host):
        p.write_bytes(inputs["lab.h5"].read_bytes()[:5000])
    r = run_inprocess(["noise", "--rate", "0.1", "-o", "labels.h5", "-q"], tmp_path)
    assert r.code == 0, r.stderr
    assert not stale.exists() and live.exists() and other_host.exists()
    r = run_inprocess(["info", str(live)], tmp_path)
    assert r.code == 2 and "unfinished temporary output" in r.stderr and len(r.stderr_lines) == 1


@pytest.mark.slow
def test_train_resume_after_kill(tmp_path: Path) -> None:
    """SIGKILL during training with step checkpoints; --resume from the last complete one finishes."""
    import torch

    ck = tmp_path / "ck"
    argv = ["train", "--arch", "mlp", "--arch-kwargs", '{"hidden": 8}', "--epochs", "6", "--batch-size", "32", "--subset", "320",
            "--checkpoint-every", "5", "--checkpoint-dir", str(ck), "--num-threads", "1", "--seed", "3", "-o", str(tmp_path / "m.pt")]
    proc = popen(argv, tmp_path)
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 120:
        if ck.exists() and len([p for p in ck.iterdir() if p.name.startswith("step-")]) >= 3:
            break
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (tmp_path / "m.pt").exists() or proc.returncode == 0
    steps = sorted(p for p in ck.iterdir() if p.name.startswith("step-"))
    assert steps, "no checkpoint written before the kill"
    last = steps[-1]  # complete by construction: written atomically
    start_step = int(torch.load(last, weights_only=True)["training_state"]["step"])
    r = run_inprocess([*argv[:-2], "--resume", str(last), "-o", str(tmp_path / "resumed.pt"), "-q"], tmp_path)
    assert r.code == 0, r.stderr
    done = torch.load(tmp_path / "resumed.pt", weights_only=True)
    hist = done["history"]
    assert hist[-1]["epoch"] == 6 and hist[-1]["step"] > start_step
    record({"kind": "resume", "id": "train/resume", "clean": True, "from_step": start_step, "to_step": hist[-1]["step"]})


def test_temp_names_do_not_nest(tmp_path: Path) -> None:
    """A writer called on the temporary path of an enclosing atomic write (dknn: write_predictions
    into atomic_path's temp) reuses it: one `.partial` suffix, one rename, nothing left."""
    from knntools.io.h5 import atomic_path, create

    out = tmp_path / "o.h5"
    with atomic_path(out) as tmp:
        assert tmp.name.count(".partial") == 1 and PARTIAL.match(tmp.name)
        with create(tmp, "labels") as f:
            assert Path(f.filename) == tmp
            f["x"] = [1, 2, 3]
        assert tmp.exists() and sorted(p.name for p in tmp_path.iterdir()) == [tmp.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]
