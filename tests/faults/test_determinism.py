"""Same seed, same arrays: each seeded command run twice in-process must give identical data.

Provenance attributes (uuid, created time, command line) differ by design and are not compared.
hnsw builds are reproducible with ``--num-threads 1`` (hnswlib's multi-threaded insertion order
varies between runs; docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .cases import WRITERS
from .conftest import record
from .harness import run_inprocess


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def pt_arrays(path: Path) -> dict[str, np.ndarray]:
    import torch

    out: dict[str, np.ndarray] = {}

    def walk(obj, prefix: str) -> None:
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj.detach().cpu().numpy()
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}/{i}")

    walk(torch.load(path, weights_only=True, map_location="cpu"), "")
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert a, f"{what}: no arrays"
    assert sorted(a) == sorted(b), what
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what}: {k}"
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), f"{what}: {k} differs"


def _argv(argv, inputs, out):
    return [str(inputs[a[1:]]) if a.startswith("@") else a.replace("{o}", str(out)) for a in argv]


RUNS = {
    "noise": (("noise", "--rate", "0.3", "--seed", "5", "-o", "{o}"), ".h5"),
    "train": (WRITERS["train"][0] + ("--seed", "3"), ".pt"),
    "embed": (WRITERS["embed"][0] + ("--num-threads", "1"), ".h5"),
    "index-exact": (WRITERS["index-query"][0] + ("--backend", "exact"), ".h5"),
    "index-hnsw": (WRITERS["index-query"][0] + ("--backend", "hnsw", "--num-threads", "1", "--seed", "7"), ".h5"),
    "dknn": (WRITERS["dknn"][0] + ("--seed", "1"), ".h5"),
    "distill-knet": (WRITERS["distill-knet"][0] + ("--seed", "2"), ".pt"),
    "seq2knn": (WRITERS["seq2knn"][0] + ("--seed", "4"), ".pt"),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_same_seed_same_arrays(name: str, inputs, tmp_path: Path) -> None:
    argv, suffix = RUNS[name]
    outs = []
    for i in (1, 2):
        out = tmp_path / f"run{i}{suffix}"
        r = run_inprocess(_argv(argv, inputs, out) + ["-q"], tmp_path)
        assert r.code == 0, r.stderr
        outs.append(out)
    read = h5_arrays if suffix == ".h5" else pt_arrays
    assert_same(read(outs[0]), read(outs[1]), name)
    record({"kind": "determinism", "id": name, "clean": True})


def test_hnsw_index_file_byte_identical_with_one_thread(inputs, tmp_path: Path) -> None:
    """`index --backend hnsw --num-threads 1 --seed S` twice writes the same index bytes."""
    import json

    payloads, headers = [], []
    for i in (1, 2):
        out = tmp_path / f"i{i}.hnsw"
        r = run_inprocess(["index", str(inputs["tr.h5"]), "--layers", "penultimate", "--num-threads", "1", "--seed", "7", "-o", str(out), "-q"], tmp_path)
        assert r.code == 0, r.stderr
        payloads.append(out.read_bytes())
        headers.append(json.loads(Path(str(out) + ".json").read_text()))
    assert payloads[0] == payloads[1]
    volatile = {"created", "uuid", "command", "build_seconds", "timing"}
    strip = lambda h: {k: v for k, v in h.items() if k not in volatile}  # noqa: E731
    assert strip(headers[0]) == strip(headers[1])
    record({"kind": "determinism", "id": "index-hnsw-file", "clean": True})
