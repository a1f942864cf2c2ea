"""Search across shards: ShardedIndex equals exact search on the concatenated rows, per-shard
neighbours files merge into the global top-k, and bad merges are refused with one line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from typer.testing import CliRunner

from conftest import make_blobs_activations, run_cli
from knntools.cli import app
from knntools.errors import InputError
from knntools.io.h5 import KFile
from knntools.io.kinds import write_activations
from knntools.io.neighbors import read_neighbors
from knntools.io.shards import shard_rows
from knntools.search import fit_index, make_index
from knntools.search.base import recall_at_k
from knntools.search.sharded import ShardedIndex, ShardPart, merge_neighbor_files, merge_topk, parts_of, set_part_infos

CLASSES = ["a", "b", "c"]
runner = CliRunner()


def index_cli(*args, code: int = 0):
    """``knntools index ARGS -q`` in-process (fast); checks the exit code, returns the result."""
    result = runner.invoke(app, ["index", *map(str, args), "-q"])
    assert result.exit_code == code, result.output
    return result


def assert_same_neighbors(a: dict, b: dict) -> None:
    """Same neighbours and distances; rows at equal distance (to float32 rounding) may come in another order."""
    np.testing.assert_allclose(a["distances"], b["distances"], rtol=5e-5, atol=1e-5)

    def canon(r: dict, key: str) -> np.ndarray:
        order = np.lexsort((r[key], np.round(r["distances"], 4)), axis=-1)
        return np.take_along_axis(r[key], order, 1)

    for key in ("indices", "ids"):
        np.testing.assert_array_equal(canon(a, key), canon(b, key))


def split(X: np.ndarray, n: int, uneven: bool = False) -> list[ShardPart]:
    """``n`` consecutive parts of ``X`` (``uneven``: sizes 1, 2, 3, ... with the rest last)."""
    if uneven:
        cuts = np.minimum(np.cumsum([0] + list(range(1, n))), len(X)).tolist() + [len(X)]
    else:
        cuts = [shard_rows(len(X), i, n)[0] for i in range(n)] + [len(X)]
    return [ShardPart(X[a:b], a) for a, b in zip(cuts[:-1], cuts[1:])]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(5, 12))
    X = (centers[rng.integers(0, 5, 500)] + rng.normal(size=(500, 12))).astype(np.float32)
    Q = (centers[rng.integers(0, 5, 70)] + rng.normal(size=(70, 12))).astype(np.float32)
    return X, Q


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("n_shards,uneven", [(1, False), (2, False), (3, False), (7, False), (7, True)])
def test_sharded_exact_equals_exact_on_concatenation(data, metric, n_shards, uneven):
    X, Q = data
    whole = make_index("exact", metric=metric, device="cpu").fit(X)
    parts = split(X, n_shards, uneven)
    if uneven:
        assert min(p.n_rows for p in parts) == 1  # k = 20 exceeds the small shards' rows
    index = ShardedIndex("exact", metric=metric, device="cpu", query_chunk=16).fit(parts)
    assert index.n_samples_ == 500 and index.n_shards == n_shards
    d0, i0 = whole.kneighbors(Q, 20)
    d, i = index.kneighbors(Q, 20)
    np.testing.assert_array_equal(i, i0)
    # float32 GEMMs of other shapes round differently: equal to a few ulps of the squared distance
    np.testing.assert_allclose(d, d0, rtol=5e-5, atol=1e-5)
    assert d.dtype == np.float32 and i.dtype == np.int64
    # the base against itself: own row excluded by identity, in global rows
    d0, i0 = whole.kneighbors(None, 5)
    d, i = index.kneighbors(None, 5)
    np.testing.assert_array_equal(i, i0)
    np.testing.assert_allclose(d, d0, rtol=5e-5, atol=1e-5)
    assert not (i == np.arange(500)[:, None]).any()


def test_k_larger_than_every_shard_and_limits(data):
    X, Q = data
    index = ShardedIndex("exact", device="cpu").fit(split(X[:30], 7))  # shards of 4-5 rows, k = 29
    d0, i0 = make_index("exact", device="cpu").fit(X[:30]).kneighbors(None, 29)
    d, i = index.kneighbors(None, 29)
    np.testing.assert_array_equal(i, i0)
    with pytest.raises(InputError, match="k=30 exceeds the 29 candidate rows"):
        index.kneighbors(None, 30)
    with pytest.raises(InputError, match="query dimension 5"):
        index.kneighbors(Q[:, :5], 3)


def test_ties_are_broken_by_global_row():
    X = np.zeros((9, 2), np.float32)  # every row at distance 0 from the query
    index = ShardedIndex("exact", device="cpu").fit(split(X, 3))
    d, i = index.kneighbors(np.zeros((1, 2), np.float32), 4)
    assert i.tolist() == [[0, 1, 2, 3]] and d.tolist() == [[0, 0, 0, 0]]
    dd, ii = merge_topk(np.array([[1.0, 2.0]], np.float32), np.array([[7, 3]]), np.array([[1.0, 2.0]], np.float32), np.array([[5, 1]]), 3)
    assert ii.tolist() == [[5, 7, 1]] and dd.tolist() == [[1, 1, 2]]


def test_sharded_hnsw_recall_close_to_unsharded(data):
    X, Q = data
    ref = make_index("exact", device="cpu").fit(X).kneighbors(Q, 10)[1]
    one = make_index("hnsw", num_threads=1).fit(X).kneighbors(Q, 10)[1]
    index = ShardedIndex("hnsw", num_threads=1).fit(split(X, 4))
    assert index._tmp is not None and all(s.index is None for s in index._shards)  # spilled: one graph in memory at a time
    i = index.kneighbors(Q, 10)[1]
    assert recall_at_k(i, ref) >= recall_at_k(one, ref) - 0.01 and recall_at_k(i, ref) >= 0.98
    tmp = Path(index._tmp.name)
    index.close()
    assert not tmp.exists()


def test_own_rows_excluded_for_queries_read_from_elsewhere(data):
    """A shard searched with the whole set's rows: the queries that are its rows skip themselves."""
    X, _ = data
    whole = make_index("exact", device="cpu").fit(X)
    d0, i0 = whole.kneighbors(None, 6)
    merged_d = np.full((500, 6), np.inf, np.float32)
    merged_i = np.full((500, 6), np.iinfo(np.int64).max)
    for part in split(X, 3):
        one = ShardedIndex.from_indexes([make_index("exact", device="cpu").fit(part.data)], [part.row_start])
        d, i = one.kneighbors(X, 6, own_rows=np.arange(500))
        merged_d, merged_i = merge_topk(merged_d, merged_i, d, i, 6)
    np.testing.assert_array_equal(merged_i, i0)


def test_fit_index_dispatches(data):
    X, Q = data
    assert type(fit_index("exact", X, device="cpu")).__name__ == "ExactIndex"
    sharded = fit_index("exact", [X[:200], X[200:]], device="cpu")
    assert isinstance(sharded, ShardedIndex) and sharded.shard_ranges_ == [(0, 200), (200, 500)]
    with pytest.raises(InputError, match="overlap"):
        parts_of([ShardPart(X[:200], 0), ShardPart(X[200:], 150)])
    with pytest.raises(InputError, match="missing"):
        parts_of([ShardPart(X[:200], 0), ShardPart(X[300:], 300)])
    with pytest.raises(InputError, match="different widths"):
        parts_of([X[:200], X[200:, :5]])


# --------------------------------------------------------------------------------------------
# Files: shards, a virtual set, per-shard neighbours files
# --------------------------------------------------------------------------------------------


def write_shards(folder: Path, n: int, n_shards: int, seed: int = 0) -> tuple[Path, list[Path]]:
    """The whole train file and ``n_shards`` shard files of it (shard attributes set), in ``folder``."""
    folder.mkdir(exist_ok=True)
    layers, logits, y = make_blobs_activations(n=n, seed=seed)
    attrs = {"dataset": "blobs", "split": "train", "model_uuid": "model-0"}
    whole = folder / "train.h5"
    write_activations(whole, layers=layers, logits=logits, labels=y, ids=np.arange(n), classes=CLASSES, attrs=attrs)
    parts = []
    for i in range(n_shards):
        a, b = shard_rows(n, i, n_shards)
        path = folder / f"part{i}.h5"
        write_activations(path, layers={k: v[a:b] for k, v in layers.items()}, logits=logits[a:b], labels=y[a:b], ids=np.arange(a, b), classes=CLASSES,
                          attrs={**attrs, "shard_index": i, "shard_count": n_shards, "row_start": a, "row_stop": b, "total_rows": n})
        parts.append(path)
    return whole, parts


def write_virtual_set(parts: list[Path], path: Path) -> None:
    """A sharded set over the parts, written by the same code as `knntools merge --virtual`."""
    from knntools.io.shards import check_parts
    from knntools.io.shards import write_virtual_set as write_set

    write_set(path, check_parts(parts))


def test_virtual_set_is_expanded_into_its_parts(tmp_path):
    whole, parts = write_shards(tmp_path, 120, 3)
    vset = tmp_path / "set.h5"
    write_virtual_set(parts, vset)
    infos = set_part_infos(vset)
    assert [i.path.name for i in infos] == ["part0.h5", "part1.h5", "part2.h5"] and [i.row_start for i in infos] == [0, 40, 80]
    assert set_part_infos(parts[1])[0].row_start == 40 and set_part_infos(whole) is None
    with h5py.File(vset, "r") as f, h5py.File(whole, "r") as g:
        index = fit_index("exact", f["layers/layer2"], device="cpu")
        assert isinstance(index, ShardedIndex) and index.shard_ranges_ == [(0, 40), (40, 80), (80, 120)]
        X = g["layers/layer2"][()]
        d0, i0 = make_index("exact", device="cpu").fit(X).kneighbors(None, 9)
        d, i = index.kneighbors(None, 9)
        np.testing.assert_array_equal(i, i0)


def test_dknn_on_a_virtual_set_equals_whole(tmp_path):
    """A method handed a sharded set's layer (an HDF5 virtual dataset) searches shard by shard, with the whole split's result."""
    from knntools.methods.dknn import DkNN

    whole, parts = write_shards(tmp_path, 150, 3)
    vset = tmp_path / "set.h5"
    write_virtual_set(parts, vset)
    test_layers, _, _ = make_blobs_activations(n=40, seed=1)
    kw = dict(k=7, normalize=False, search_params={"device": "cpu"})
    with KFile(whole) as kf, h5py.File(vset, "r") as f:
        y = kf.read_labels()
        a = DkNN(**kw).fit({n: kf.layer(n) for n in ("layer1", "layer2")}, y, n_classes=3)
        b = DkNN(**kw).fit({n: f[f"layers/{n}"] for n in ("layer1", "layer2")}, y, n_classes=3)
        assert isinstance(b._build("layer1"), ShardedIndex) and b._build("layer1").n_shards == 3
        for n in ("layer1", "layer2"):
            da, ia = a.kneighbors_layer(n, test_layers[n])
            db, ib = b.kneighbors_layer(n, test_layers[n])
            np.testing.assert_array_equal(ib, ia)
            np.testing.assert_allclose(db, da, rtol=5e-5, atol=1e-5)


def test_cli_several_shards_and_per_shard_files_merge_to_whole(tmp_path, activations_pair):
    whole, parts = write_shards(tmp_path / "shards", 160, 3)
    _, test = activations_pair
    ref = tmp_path / "whole_nbrs.h5"
    index_cli(whole, "--layers", "all", "--backend", "exact", "--query", test, "-k", "60", "-o", ref)
    # one process over all shards
    across = tmp_path / "across.h5"
    index_cli(*parts, "--layers", "all", "--backend", "exact", "--query", test, "-k", "60", "-o", across)
    # one job per shard (k = 60 > the 53 rows of each shard is refused there), then merged
    index_cli(parts[0], "--layers", "layer1", "--backend", "exact", "--query", test, "-k", "60", "-o", tmp_path / "x.h5", code=2)
    per_shard = []
    for i, p in enumerate(parts):
        out = tmp_path / f"nbrs_{i}.h5"
        index_cli(p, "--layers", "all", "--backend", "exact", "--query", test, "-k", "50", "-o", out)
        per_shard.append(out)
    with KFile(per_shard[1]) as kf:
        assert (kf.attrs["base_row_start"], kf.attrs["base_row_stop"], kf.attrs["base_total_rows"]) == (53, 106, 160)
        assert read_neighbors(kf, "layer1")["indices"].min() >= 53
    merged = tmp_path / "merged.h5"
    merge_neighbor_files(per_shard[::-1], merged, chunk_rows=7)
    merged_cli = tmp_path / "merged_cli.h5"  # the same through `knntools merge`
    r = run_cli("merge", *per_shard, "-o", merged_cli)
    assert r.returncode == 0, r.stderr
    r = run_cli("merge", "--virtual", *per_shard, "-o", tmp_path / "v.h5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "v.h5").exists()
    with KFile(merged) as a, KFile(merged_cli) as b:
        for layer in ("layer1", "layer2", "logits"):
            assert_same_neighbors(read_neighbors(b, layer), read_neighbors(a, layer))
    ref50 = tmp_path / "whole50.h5"
    index_cli(whole, "--layers", "all", "--backend", "exact", "--query", test, "-k", "50", "-o", ref50)
    with KFile(ref) as a, KFile(across) as b, KFile(ref50) as c, KFile(merged) as m:
        for layer in ("layer1", "layer2", "logits"):
            ra, rb, rc, rm = (read_neighbors(f, layer) for f in (a, b, c, m))
            assert_same_neighbors(rb, ra)
            assert_same_neighbors(rm, rc)
        assert m.attrs["k"] == 50 and m.attrs["base_total_rows"] == 160 and len(m.attrs["base_part_uuids"]) == 3


def test_cli_shard_searched_with_its_set_excludes_own_rows(tmp_path):
    whole, parts = write_shards(tmp_path, 90, 3)
    vset = tmp_path / "set.h5"
    write_virtual_set(parts, vset)
    ref = tmp_path / "ref.h5"
    index_cli(whole, "--layers", "layer2", "--backend", "exact", "--query", whole, "-k", "5", "-o", ref)
    outs = []
    for i, p in enumerate(parts):
        outs.append(tmp_path / f"self_{i}.h5")
        index_cli(p, "--layers", "layer2", "--backend", "exact", "--query", vset, "-k", "5", "-o", outs[-1])
    merged = tmp_path / "merged.h5"
    merge_neighbor_files(outs, merged)
    # the set itself as DATA and as --query: one process, shard by shard, leave-one-out
    across = tmp_path / "across.h5"
    index_cli(vset, "--layers", "layer2", "--backend", "exact", "--query", vset, "-k", "5", "-o", across)
    with KFile(ref) as a, KFile(merged) as m, KFile(across) as c:
        np.testing.assert_array_equal(read_neighbors(m, "layer2")["indices"], read_neighbors(a, "layer2")["indices"])
        np.testing.assert_array_equal(read_neighbors(c, "layer2")["indices"], read_neighbors(a, "layer2")["indices"])
        assert m.attrs["exclude_self"] and a.attrs["exclude_self"] and c.attrs["exclude_self"]
        with KFile(vset) as sf:
            assert c.attrs["base_uuid"] == sf.uuid


def test_cli_builds_one_index_per_shard(tmp_path):
    from knntools.search import read_index_header

    _, parts = write_shards(tmp_path, 90, 3)
    proc = index_cli(parts[2], parts[0], parts[1], "--layers", "layer2")
    assert proc.stdout.split() == [str(p.with_name(f"part{i}.layer2.hnsw")) for i, p in enumerate(parts)]
    heads = [read_index_header(p.with_name(f"part{i}.layer2.hnsw")) for i, p in enumerate(parts)]
    assert [h["metadata"]["row_start"] for h in heads] == [0, 30, 60] and heads[0]["n_samples"] == 30
    index = ShardedIndex.from_saved([p.with_name(f"part{i}.layer2.hnsw") for i, p in enumerate(parts)])
    assert index.shard_ranges_ == [(0, 30), (30, 60), (60, 90)] and all(s.index is None for s in index._shards)
    # a missing shard is named; nothing written
    before = sorted(x.name for x in tmp_path.iterdir())
    proc = run_cli("index", parts[0], parts[2], "--layers", "layer2", "--force")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "rows [30, 60) missing" in proc.stderr and "part2.h5" in proc.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == before


@pytest.fixture
def shard_files(tmp_path, activations_pair):
    _, parts = write_shards(tmp_path / "shards", 120, 3)
    _, test = activations_pair
    outs = []
    for i, p in enumerate(parts):
        outs.append(tmp_path / f"n{i}.h5")
        index_cli(p, "--layers", "layer2", "--backend", "exact", "--query", test, "-k", "4", "-o", outs[-1])
    return tmp_path, parts, outs, test


def test_merge_refuses_bad_parts_and_writes_nothing(shard_files):
    tmp_path, parts, outs, test = shard_files
    out = tmp_path / "merged.h5"
    with pytest.raises(InputError, match=r"shard 1/3 \(base rows \[40, 80\)\) missing before"):
        merge_neighbor_files([outs[0], outs[2]], out)
    with pytest.raises(InputError, match=r"rows \[80, 120\) of 120|shard 2/3"):
        merge_neighbor_files(outs[:2], out)
    with pytest.raises(InputError, match="shard 1 given twice"):
        merge_neighbor_files([outs[0], outs[1], outs[1], outs[2]], out)
    other = tmp_path / "other_q.h5"
    index_cli(parts[1], "--layers", "layer2", "--backend", "exact", "--query", parts[0], "-k", "4", "-o", other)
    with pytest.raises(InputError, match="query_uuid .*another query file"):
        merge_neighbor_files([outs[0], other, outs[2]], out)
    k5 = tmp_path / "k5.h5"
    index_cli(parts[1], "--layers", "layer2", "--backend", "exact", "--query", test, "-k", "5", "-o", k5)
    with pytest.raises(InputError, match="k is 5"):
        merge_neighbor_files([outs[0], k5, outs[2]], out)
    with pytest.raises(InputError, match="expected a per-shard neighbours file"):
        whole_nbrs = tmp_path / "whole.h5"
        index_cli(tmp_path / "shards" / "train.h5", "--layers", "layer2", "--backend", "exact", "--query", test, "-k", "4", "-o", whole_nbrs)
        merge_neighbor_files([outs[0], whole_nbrs], out)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    # overlap: a shard of the same rows split in 2 (rows [0, 60) overlap shards 0/3 and 1/3)
    _, parts2 = write_shards(tmp_path / "two", 120, 2)
    over = tmp_path / "over.h5"
    index_cli(parts2[0], "--layers", "layer2", "--backend", "exact", "--query", test, "-k", "4", "-o", over)
    with pytest.raises(InputError, match="base_shard_count"):
        merge_neighbor_files([outs[0], over], out)
    # an existing output is never changed
    out.write_bytes(b"keep")
    with pytest.raises(InputError, match="exists"):
        merge_neighbor_files(outs, out)
    assert out.read_bytes() == b"keep"
    merge_neighbor_files(outs, out, force=True)
    with KFile(out) as m:
        assert m.attrs["k"] == 4
