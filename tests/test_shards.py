"""Sharded activation sets: `embed --shard I/N`, `knntools merge [--virtual]`, sets opened by every
reader like one file, and `embed` under torchrun (digits + a small MLP)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from knntools.errors import InputError  # noqa: E402
from knntools.io.h5 import KFile  # noqa: E402
from knntools.io.shards import part_path, set_parts  # noqa: E402
from conftest import invoke, ok_json  # noqa: E402

torch.set_num_threads(1)

DATASETS = ("layers/fc1", "logits", "labels", "labels_clean", "ids")


def fails_one_line(capsys, *args, code=2, match=None):
    """The command exits with ``code`` and exactly one stderr line (matching ``match``)."""
    rc, _, err = invoke(capsys, *args, "-q")
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code and len(lines) == 1, (rc, err)
    if match:
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


def arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in DATASETS}


def no_new_files(folder: Path, before: set[str]):
    now = {p.name for p in folder.iterdir()}
    assert now == before, sorted(now - before)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """A small MLP on digits, its unsharded train/test activations, train in 2 and 3 shards, test in 3."""
    from knntools.cli import main

    d = tmp_path_factory.mktemp("shards")
    proc = subprocess.run([sys.executable, "-m", "knntools", "train", "--dataset", "digits", "--arch", "mlp", "--arch-kwargs", "hidden=32",
                           "--epochs", "3", "--lr", "3e-3", "--seed", "0", "-o", str(d / "m.pt"), "-q", "--num-threads", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    def run(*args):
        try:
            main([str(a) for a in args] + ["-q", "--num-threads", "1"])
        except SystemExit as exc:
            assert not exc.code, exc.code

    run("embed", d / "m.pt", "--split", "train", "-o", d / "train.h5")
    run("embed", d / "m.pt", "--split", "test", "-o", d / "test.h5")
    for n in (2, 3):
        for i in range(n):
            run("embed", d / "m.pt", "--split", "train", "--shard", f"{i}/{n}", "-o", d / f"tr{i}of{n}.h5")
    for i in range(3):
        run("embed", d / "m.pt", "--split", "test", "--shard", f"{i}/3", "-o", d / f"te{i}of3.h5")
    return d


def test_shard_rows_are_the_unsharded_rows(embedded):
    d = embedded
    full = arrays(d / "train.h5")
    n = len(full["ids"])
    for count in (2, 3):
        for i in range(count):
            p = d / f"tr{i}of{count}.h5"
            a, b = i * n // count, (i + 1) * n // count
            with KFile(p, "activations") as kf:
                assert (kf.attrs["shard_index"], kf.attrs["shard_count"], kf.attrs["row_start"], kf.attrs["row_stop"], kf.attrs["total_rows"]) == (i, count, a, b, n)
                assert not kf.is_set and kf.n_samples == b - a
            part = arrays(p)
            for k in DATASETS:
                assert part[k].dtype == full[k].dtype and np.array_equal(part[k], full[k][a:b]), (p, k)  # bitwise


@pytest.mark.parametrize("count", [2, 3])
def test_merge_and_virtual_set_equal_the_unsharded_file(capsys, embedded, count):
    d = embedded
    parts = [d / f"tr{i}of{count}.h5" for i in reversed(range(count))]  # any order
    merged, vset = d / f"merged{count}.h5", d / f"set{count}.h5"
    res = ok_json(capsys, "merge", *parts, "-o", merged)
    assert res["n_samples"] == 1347 and [p["row_start"] for p in res["parts"]] == sorted(p["row_start"] for p in res["parts"])
    ok_json(capsys, "merge", "--virtual", *parts, "-o", vset)
    full = arrays(d / "train.h5")
    uuids = []
    for i in range(count):
        with KFile(d / f"tr{i}of{count}.h5") as kf:
            uuids.append(kf.uuid)
    with KFile(d / "train.h5") as ref:
        for out in (merged, vset):
            got = arrays(out)
            for k in DATASETS:
                assert got[k].dtype == full[k].dtype and np.array_equal(got[k], full[k]), (out, k)
            with KFile(out, "activations") as kf:
                assert kf.uuid not in uuids and kf.parents == uuids
                assert kf.attrs["accuracy"] == pytest.approx(ref.attrs["accuracy"], abs=1e-12)
                assert "shard_index" not in kf.attrs and kf.attrs["model_uuid"] == ref.attrs["model_uuid"]
                assert kf.layers == ref.layers and kf.layer(kf.penultimate).attrs["shape"] is not None
    with KFile(vset) as kf:
        assert kf.is_set and [p.path.name for p in kf.parts] == [f"tr{i}of{count}.h5" for i in range(count)]
        assert kf.f["layers/fc1"].is_virtual
    assert set_parts(merged) == [] and [(p.row_start, p.row_stop) for p in set_parts(vset)] == [
        (i * 1347 // count, (i + 1) * 1347 // count) for i in range(count)]
    with h5py.File(merged) as f:
        assert not f["layers/fc1"].is_virtual


def test_virtual_set_moved_and_opened_from_another_cwd(capsys, embedded, tmp_path, monkeypatch):
    d = embedded
    moved = tmp_path / "moved" / "deep"
    moved.mkdir(parents=True)
    for i in range(2):
        shutil.copy(d / f"tr{i}of2.h5", moved)
    ok_json(capsys, "merge", "--virtual", moved / "tr1of2.h5", moved / "tr0of2.h5", "-o", moved / "set.h5")
    with h5py.File(moved / "set.h5") as f:  # relative source paths
        assert sorted(s.file_name for s in f["ids"].virtual_sources()) == ["tr0of2.h5", "tr1of2.h5"]
    final = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "moved"), str(final))
    other = tmp_path / "cwd"
    other.mkdir()
    shutil.copy(d / "tr1of2.h5", other / "tr0of2.h5")  # a decoy of the same name in the cwd must not be read
    monkeypatch.chdir(other)
    rel = os.path.relpath(final / "deep" / "set.h5", other)
    full = arrays(d / "train.h5")
    got = arrays(rel)
    for k in DATASETS:
        assert np.array_equal(got[k], full[k]), k
    with KFile(rel, "activations") as kf:
        assert kf.read_layer("fc1").shape == full["layers/fc1"].shape
    res = ok_json(capsys, "info", rel)
    assert res["files"][0]["n_samples"] == 1347


def test_missing_or_replaced_part_is_an_input_error(capsys, embedded, tmp_path):
    d = embedded
    for i in range(2):
        shutil.copy(d / f"tr{i}of2.h5", tmp_path)
    ok_json(capsys, "merge", "--virtual", tmp_path / "tr0of2.h5", tmp_path / "tr1of2.h5", "-o", tmp_path / "set.h5")
    os.replace(tmp_path / "tr1of2.h5", tmp_path / "away.h5")
    with pytest.raises(InputError, match=r"part tr1of2\.h5 \(shard 1/2, rows \[673, 1347\)\) not found"):
        KFile(tmp_path / "set.h5")
    before = {p.name for p in tmp_path.iterdir()}
    fails_one_line(capsys, "dknn", tmp_path / "set.h5", d / "test.h5", "-k", "5", "--calibration", "50", "-o", tmp_path / "dk.h5",
                   match=r"set\.h5: part tr1of2\.h5 .*not found")
    no_new_files(tmp_path, before)
    shutil.copy(d / "tr1of3.h5", tmp_path / "tr1of2.h5")  # another file under the part's name
    with pytest.raises(InputError, match="has uuid .*; expected"):
        KFile(tmp_path / "set.h5")


def test_merge_refuses_bad_parts_and_writes_nothing(capsys, embedded, tmp_path):
    d = embedded
    other_model = tmp_path / "other.h5"
    shutil.copy(d / "tr1of2.h5", other_model)
    with h5py.File(other_model, "a") as f:
        f.attrs["model_uuid"] = "another-model"
        f.attrs["uuid"] = "another-uuid"
    out = tmp_path / "out.h5"
    before = {p.name for p in tmp_path.iterdir()}
    cases = [
        ((d / "tr0of2.h5",), r"missing shard 1/2 \(rows \[673, 1347\)"),
        ((d / "tr0of3.h5", d / "tr2of3.h5"), r"missing shard 1/3 .* before .*tr2of3\.h5"),
        ((d / "tr0of2.h5", d / "tr1of3.h5", d / "tr2of3.h5"), r"tr1of3\.h5 \(shard 1/3\) holds rows \[449, 898\), overlapping .*tr0of2\.h5"),
        ((d / "tr0of2.h5", d / "tr0of2.h5", d / "tr1of2.h5"), r"duplicate"),
        ((d / "tr0of2.h5", other_model), r"other\.h5: model_uuid is 'another-model'"),
        ((d / "tr0of2.h5", d / "te1of3.h5"), r"te1of3\.h5: split is 'test' but .* has 'train'"),
        ((d / "train.h5",), r"train\.h5: not a shard"),
    ]
    for parts, match in cases:
        for virtual in ((), ("--virtual",)):
            fails_one_line(capsys, "merge", *virtual, *parts, "-o", out, match=match)
            no_new_files(tmp_path, before)
    fails_one_line(capsys, "merge", d / "test.h5", "-o", d / "test.h5", match="exists")
    ok_json(capsys, "lasenn", d / "train.h5", d / "test.h5", "-k", "3", "-o", tmp_path / "pred.h5")
    before = {p.name for p in tmp_path.iterdir()}
    fails_one_line(capsys, "merge", tmp_path / "pred.h5", "-o", out, match=r"pred\.h5: merging files of kind 'predictions' is not supported")
    no_new_files(tmp_path, before)


def test_shard_option_is_refused_under_torchrun(capsys, embedded, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    fails_one_line(capsys, "embed", embedded / "m.pt", "--split", "test", "--shard", "0/2", "-o", tmp_path / "x.h5", match="not allowed under torchrun")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", ["2/2", "0/0", "1", "a/b", "-1/2"])
def test_bad_shard_spec(capsys, embedded, tmp_path, spec):
    fails_one_line(capsys, "embed", embedded / "m.pt", "--split", "test", f"--shard={spec}", "-o", tmp_path / "x.h5", match="shard")
    assert list(tmp_path.iterdir()) == []


VOLATILE = re.compile(r"time|seconds|_s$|per_s|uuid|output|path|file|bytes|rss|^train$|^test$|^eval$|^input$|^data$|^query$|checkpoint|calibration_source|index$|^shards?$")


def stable(obj):
    """A JSON summary without timings, paths and uuids."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if not VOLATILE.search(k)}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def test_commands_give_the_same_numbers_on_a_set_and_on_the_merged_file(capsys, embedded, tmp_path):
    d = embedded
    ok_json(capsys, "merge", *(d / f"tr{i}of2.h5" for i in range(2)), "-o", tmp_path / "merged.h5")
    ok_json(capsys, "merge", "--virtual", *(d / f"tr{i}of2.h5" for i in range(2)), "-o", tmp_path / "set.h5")
    ok_json(capsys, "merge", "--virtual", *(d / f"te{i}of3.h5" for i in range(3)), "-o", tmp_path / "teset.h5")
    plain = (tmp_path / "merged.h5", d / "test.h5")
    sharded = (tmp_path / "set.h5", tmp_path / "teset.h5")
    commands = {
        "dknn": lambda tr, te, o: ("dknn", tr, te, "-k", "10", "--calibration", "100", "-o", o),
        "lasenn": lambda tr, te, o: ("lasenn", tr, te, "-k", "3", "-o", o),
        "probe": lambda tr, te, o: ("probe", tr, te, "--layers", "all", "--classifiers", "knn,lr", "-o", o),
        "index": lambda tr, te, o: ("index", tr, "--layers", "penultimate", "--backend", "exact", "--query", te, "-k", "5", "-o", o),
        "knet": lambda tr, te, o: ("distill-knet", tr, "--epochs", "2", "--k-range", "1:11", "--seed", "0", "-o", o),
    }
    for name, make in commands.items():
        outs = []
        for tag, (tr, te) in (("plain", plain), ("set", sharded)):
            o = tmp_path / f"{name}_{tag}{'.pt' if name == 'knet' else '.h5'}"
            res = ok_json(capsys, *make(tr, te, o))
            outs.append((stable(res), o))
        assert outs[0][0] == outs[1][0], name
        if name != "knet":
            with h5py.File(outs[0][1]) as a, h5py.File(outs[1][1]) as b:
                names = []
                a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
                assert names
                for n in names:
                    x, y = a[n][()], b[n][()]
                    if name == "dknn" and n.endswith("distances"):
                        # dknn searches a set shard by shard (one index per part): the same neighbours,
                        # distances equal up to float32 rounding (GEMMs of other shapes)
                        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=f"{name}: {n}")
                    elif name == "dknn" and n.startswith("neighbors/") and n.endswith("/ids"):
                        # the same neighbour sets; exact distance ties may be listed in another order
                        assert np.array_equal(np.sort(x, axis=1), np.sort(y, axis=1)), f"{name}: {n}"
                    else:
                        assert np.array_equal(x, y), f"{name}: {n}"
    # kNet evaluation on the test set against its training set (the checkpoint records the set)
    evals = [stable(ok_json(capsys, "distill-knet", tmp_path / f"knet_{tag}.pt", "--eval", te, "--k", "1,5,11", "-o", tmp_path / f"ke_{tag}.h5"))
             for tag, te in (("plain", plain[1]), ("set", sharded[1]))]
    assert evals[0] == evals[1] and evals[0]["accuracy"]


KILL_RANK_1 = """
import os, signal, sys
import torch.distributed as dist
if os.environ.get("RANK") == "1":  # rank 1 dies (kill -9) once its part is written
    dist.all_reduce = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
from knntools.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_embed_under_torchrun_writes_parts_and_a_set(capsys, embedded, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside the interpreter")
    d = embedded
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "test_sharded.h5"
    (tmp_path / "kill_rank.py").write_text(KILL_RANK_1)
    # a rank killed with -9: exit non-zero, no set, no part left behind
    before = {p.name for p in tmp_path.iterdir()}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(tmp_path / "kill_rank.py"), "embed", str(d / "m.pt"),
                           "--split", "test", "-o", str(out), "--num-threads", "1"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert len([line for line in proc.stderr.splitlines() if line.startswith("knntools embed: error:")]) <= 1, proc.stderr
    no_new_files(tmp_path, before)
    # the real run
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "knntools", "embed", str(d / "m.pt"),
                           "--split", "test", "-o", str(out), "--json", "--num-threads", "1"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    with KFile(d / "test.h5") as ref:
        assert res["n_samples"] == 450 and res["accuracy"] == pytest.approx(ref.attrs["accuracy"], abs=1e-12)
    parts = [part_path(out, i, 2) for i in range(2)]
    assert [p.name for p in parts] == ["test_sharded-00000-of-00002.h5", "test_sharded-00001-of-00002.h5"]
    assert {p.name for p in tmp_path.iterdir()} == before | {out.name, *(p.name for p in parts)}
    assert [p.path.name for p in set_parts(out)] == [p.name for p in parts]
    full, got = arrays(d / "test.h5"), arrays(out)
    for k in DATASETS:
        assert np.array_equal(got[k], full[k]), k
    on_set = ok_json(capsys, "dknn", d / "train.h5", out, "-k", "10", "--calibration", "100", "-o", tmp_path / "dknn.h5")
    on_file = ok_json(capsys, "dknn", d / "train.h5", d / "test.h5", "-k", "10", "--calibration", "100", "-o", tmp_path / "dknn_plain.h5")
    assert stable(on_set) == stable(on_file) and on_set["accuracy"] > 0.5
