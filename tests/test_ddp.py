"""`knntools train` under torchrun: DistributedDataParallel on CPU (gloo), 2 processes, digits.

Each test launches ``python -m torch.distributed.run --standalone --nproc-per-node 2 -m knntools
train …`` as a subprocess with this interpreter (the environment, PYTHONPATH included, is inherited).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed not available", allow_module_level=True)

TRAIN = ["train", "--dataset", "digits", "--arch", "mlp", "--arch-kwargs", "hidden=64", "--lr", "3e-3", "--seed", "0", "--num-threads", "1"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    return env


def torchrun(args: list[str], cwd: Path, *, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "knntools", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def single_json(capsys, args: list[str]) -> dict:
    """Run ``knntools ARGS --json`` in this process (a plain single-process run)."""
    from knntools.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args] + ["--json"])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


@pytest.mark.slow
def test_ddp_accuracy_rank0_writes_and_exact_resume(tmp_path, capsys):
    ddp_dir, one_dir = tmp_path / "ddp", tmp_path / "one"
    ddp_dir.mkdir()
    one_dir.mkdir()
    # single process, as today
    acc_one = single_json(capsys, [*TRAIN, "--epochs", "12", "-o", one_dir / "one.pt"])["test_acc"]
    # two processes (gloo), with a step checkpoint in the middle of epoch 8 (11 steps per epoch)
    p2 = torchrun([*TRAIN, "--epochs", "12", "--checkpoint-every", "85", "--checkpoint-dir", "ck", "-o", "ddp.pt", "--json"], ddp_dir)
    assert p2.returncode == 0, p2.stderr
    lines = [line for line in p2.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, p2.stdout  # rank 0 alone reports
    summary = json.loads(lines[0])
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert abs(summary["test_acc"] - acc_one) <= 0.01, (summary["test_acc"], acc_one)
    assert summary["test_acc"] > 0.9
    assert p2.stderr.count("epoch 12/12") == 1  # messages from rank 0 only
    # rank 0 alone wrote: one checkpoint, one metrics file, one step checkpoint; no temporary files
    assert _files(ddp_dir) == {"ddp.pt", "ddp.metrics.csv", "ck"}
    assert _files(ddp_dir / "ck") == {"step-0000085.pt"}
    ck = torch.load(ddp_dir / "ddp.pt", weights_only=True)
    prov = ck["provenance"]
    assert prov["world_size"] == 2 and prov["backend"] == "gloo"
    assert ck["training_state"]["world_size"] == 2 and len(ck["training_state"]["rng_ranks"]) == 2
    assert [h["epoch"] for h in ck["history"]] == list(range(1, 13))
    # a single-process checkpoint records world size 1
    assert torch.load(one_dir / "one.pt", weights_only=True)["provenance"]["world_size"] == 1
    # --resume under DDP from the mid-epoch step checkpoint replays the same batches: same weights
    p3 = torchrun([*TRAIN, "--epochs", "12", "--resume", "ck/step-0000085.pt", "-o", "resumed.pt", "--json"], ddp_dir)
    assert p3.returncode == 0, p3.stderr
    res = torch.load(ddp_dir / "resumed.pt", weights_only=True)
    assert res["provenance"]["resumed_from"] == "ck/step-0000085.pt"
    for k, v in ck["state_dict"].items():
        assert torch.equal(v, res["state_dict"][k]), k
    assert json.loads(p3.stdout)["test_acc"] == summary["test_acc"]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_killed_rank_leaves_no_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "knntools",
           *TRAIN, "--epochs", "5000", "--checkpoint-every", "20", "--checkpoint-dir", "ck", "-o", "ddp.pt"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "ck" / "step-0000020.pt").exists():  # training is under way
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1] if proc.poll() is not None else "timeout"
            time.sleep(0.2)
        workers = {_rank_of(c): c for c in _children(proc.pid)}
        assert 1 in workers, workers
        os.kill(workers[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert not (tmp_path / "ddp.pt").exists() and not (tmp_path / "ddp.metrics.csv").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]


@pytest.mark.slow
def test_ddp_streams_an_imagefolder_with_workers(tmp_path, capsys):
    pytest.importorskip("PIL.Image")
    from test_imagefolder import CLASSES, _write_split

    _write_split(tmp_path / "photos" / "train", 8, 0)
    _write_split(tmp_path / "photos" / "test", 4, 1)
    p = torchrun(["train", "--dataset", "imagefolder", "--data-dir", "photos", "--image-size", "16", "--workers", "2", "--arch", "lenet",
                  "--epochs", "3", "--batch-size", "8", "--lr", "3e-3", "--num-threads", "1", "-o", "f.pt", "--json"], tmp_path)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip())
    # 24 rows: 12 per rank, 4 per rank and step (global batch 8) -> 3 steps per epoch
    assert summary["world_size"] == 2 and summary["steps"] == 9 and summary["classes"] == CLASSES
    assert _files(tmp_path) == {"photos", "f.pt", "f.metrics.csv"}
    # embedding the test split with the checkpoint reproduces the accuracy all ranks evaluated together
    single_json(capsys, ["embed", tmp_path / "f.pt", "--split", "test", "--data-dir", tmp_path / "photos", "--workers", "2",
                         "-o", tmp_path / "t.h5"])
    from knntools.io.h5 import KFile

    with KFile(tmp_path / "t.h5", "activations") as kf:
        assert kf.attrs["accuracy"] == pytest.approx(summary["test_acc"], abs=1e-9)
