"""Benchmark search across shards: query throughput and peak memory against the unsharded index.

Fashion-MNIST training pixels (60000 x 784, scaled to [0, 1]) projected to ``--dim`` dimensions
by a Gaussian random projection stand in for activations; the test pixels (projected alike) are
the queries. The training rows are written as one activations file and as 1, 2, 4 and 8 shard
files (``knntools.io.shards`` attributes); hnsw indexes are built per shard and saved beside
them (as ``knntools index PART`` does; the 1-shard configuration reuses the unsharded index).

Every configuration then runs in a fresh subprocess: the unsharded index (``load_index`` /
``ExactIndex`` on the whole file) and ``ShardedIndex`` over N shards (loaded or fitted one shard
at a time), for ``hnsw`` and ``exact``. Memory: once the libraries are imported and the queries
read, the subprocess resets its peak resident size (``/proc/self/clear_refs``) and notes its
resident size; the *search's peak* is the peak resident size after loading the index(es) and
searching, minus that (the import transients of torch would otherwise hide it).
``ru_maxrss`` of the whole subprocess is reported too.

Goals (issue 14), printed with ratio and PASS / FALL SHORT:

* throughput >= 0.8x the unsharded index's, measured two ways: ``sequential`` (one process
  searches every shard in turn) and ``per job`` (each shard searched by its own job, as in a
  SLURM array: queries/s of the slowest shard's search; the merge is reported separately);
* the search's peak <= largest shard's index + 160 MiB. The index of an hnsw shard is its graph
  (the file size); an exact shard keeps a reference to its rows and their norms, and its search
  holds the rows read from HDF5 plus their augmented copy, so its index term is 2 x the shard's
  float32 rows (``ExactIndex`` streams blocks of at most 256 MB, which caps it for larger
  shards). The 160 MiB cover the fixed buffers: exact's 64 MiB score buffer, library workspaces,
  the query chunk, the candidate lists and the result arrays. Subprocesses run with
  ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed buffers leave the resident size.

Run from the repository root (about 4 minutes on 2 busy cores)::

    python benchmarks/bench_shards.py -o benchmarks/results/shards.md
    python benchmarks/bench_shards.py --n-base 10000 --n-query 1000 --shards 1,2   # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Allowance on top of the largest shard's index: exact's 64 MiB score buffer plus library
#: workspaces (GEMM packing, topk), the query chunk, candidate lists and results. Set after a first
#: run measured exact's fixed working set at 120-150 MiB whatever the shard size.
SLACK_BYTES = 160 << 20
MIB = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-base", type=int, default=60000, help="training rows (default 60000)")
    p.add_argument("--n-query", type=int, default=5000, help="query rows (default 5000)")
    p.add_argument("--dim", type=int, default=256, help="random projection of the 784 pixels (default 256; 784 = raw pixels)")
    p.add_argument("--shards", default="1,2,4,8", help="shard counts (default 1,2,4,8)")
    p.add_argument("--backends", default="hnsw,exact", help="backends (default hnsw,exact)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--num-threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="search timings are the minimum of this many runs (default 3; the machine is shared)")
    p.add_argument("--workdir", type=Path, help="folder for the files (default: a temporary folder, removed after)")
    p.add_argument("-o", "--output", type=Path, help="write the markdown report here (also printed)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def proc_status(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> int:
    """Reset the peak resident size (VmHWM) to the current one; returns the current resident size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status("VmRSS")


# --------------------------------------------------------------------------------------------
# Children: one configuration each, in a fresh process
# --------------------------------------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration; returns timings and ``ru_maxrss``."""
    import h5py

    from knntools.search import load_index, make_index
    from knntools.search.sharded import ShardedIndex, ShardPart

    k, nt, backend = spec["k"], spec["num_threads"], spec["backend"]
    if backend == "exact":
        import torch

        torch.set_num_threads(nt)
    with h5py.File(spec["test"], "r") as f:
        Q = f["layers/x"][()]
    out: dict[str, Any] = {}
    if spec["mode"] == "build":  # hnsw indexes of every shard, saved beside the parts
        make_index("hnsw", num_threads=nt).fit(np.ascontiguousarray(Q[:64])).kneighbors(Q[:8], 3)  # libraries loaded
        for part, dest in zip(spec["parts"], spec["dests"]):
            with h5py.File(part, "r") as f:
                rss0 = reset_peak()
                t0 = time.perf_counter()
                index = make_index("hnsw", num_threads=nt, seed=spec["seed"]).fit(f["layers/x"])
                out.setdefault("build_s", []).append(time.perf_counter() - t0)
                out.setdefault("build_peak", []).append(proc_status("VmHWM") - rss0)
                with h5py.File(part, "r") as g:
                    start = int(g.attrs.get("row_start", 0))
                index.save(dest, metadata={"row_start": start})
                del index
        out["rss"] = rss_peak_bytes()
        return out
    files = [h5py.File(p, "r") for p in spec["parts"]]
    params = {"device": "cpu", "num_threads": nt} if backend == "exact" else {"num_threads": nt}
    tiny = np.ascontiguousarray(Q[:64])
    make_index(backend, **params).fit(tiny).kneighbors(tiny[:8], 3)  # libraries loaded and initialised
    rss0 = reset_peak()
    t0 = time.perf_counter()
    if spec["mode"] == "whole":
        index = load_index(spec["indexes"][0]) if backend == "hnsw" else make_index("exact", **params).fit(files[0]["layers/x"])
    elif backend == "hnsw":
        index = ShardedIndex.from_saved(spec["indexes"])
    else:
        index = ShardedIndex("exact", **params).fit([ShardPart(f["layers/x"], int(f.attrs.get("row_start", 0))) for f in files])
    out["load_s"] = time.perf_counter() - t0
    out["search_s"] = float("inf")
    for _ in range(spec["repeat"]):
        t0 = time.perf_counter()
        d, i = index.kneighbors(Q, k)
        out["search_s"] = min(out["search_s"], time.perf_counter() - t0)
    out["search_peak"] = proc_status("VmHWM") - rss0
    out["rss"] = rss_peak_bytes()
    if spec["mode"] == "sharded":
        # per job: each shard alone (what one SLURM array task does), then the merge
        from knntools.search.sharded import merge_topk

        per, cands = [], []
        for s, (start, stop) in enumerate(index.shard_ranges_):
            one = ShardedIndex.from_saved([spec["indexes"][s]]) if backend == "hnsw" else ShardedIndex("exact", **params).fit([ShardPart(files[s]["layers/x"], start)])
            best = float("inf")
            for _ in range(spec["repeat"]):
                t0 = time.perf_counter()
                found = one.kneighbors(Q, min(k, stop - start))
                best = min(best, time.perf_counter() - t0)
            cands.append(found)
            per.append(best)
            del one
        t0 = time.perf_counter()
        md, mi = cands[0]
        for cd, ci in cands[1:]:
            md, mi = merge_topk(md, mi, cd, ci, k)
        out["merge_s"] = time.perf_counter() - t0
        out["per_shard_search_s"] = per
        assert np.array_equal(mi, i), "per-job merge differs from the sequential sharded search"
    np.save(spec["result"], i)
    return out


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    # A fixed glibc mmap threshold: every buffer >= 128 KiB is mapped and returned to the system
    # when freed. With glibc's default dynamic threshold, freed 30-60 MB search buffers stay in
    # the heap and RSS would show the allocator's retention rather than live memory.
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child {spec['mode']} {spec['backend']} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Parent: data, files, configurations, report
# --------------------------------------------------------------------------------------------


def write_files(folder: Path, X: np.ndarray, Q: np.ndarray, counts: list[int]) -> dict[int, list[Path]]:
    from knntools.io.kinds import write_activations
    from knntools.io.shards import shard_rows

    n = len(X)
    y = np.zeros(n, np.int64)
    write_activations(folder / "train.h5", layers={"x": X}, logits=None, labels=y, ids=np.arange(n), classes=["c"], attrs={"model_uuid": "bench"})
    write_activations(folder / "test.h5", layers={"x": Q}, logits=None, labels=np.zeros(len(Q), np.int64), ids=np.arange(len(Q)), classes=["c"], attrs={"model_uuid": "bench"})
    parts: dict[int, list[Path]] = {}
    for c in counts:
        if c == 1:
            parts[1] = [folder / "train.h5"]
            continue
        (folder / f"s{c}").mkdir()
        parts[c] = []
        for i in range(c):
            a, b = shard_rows(n, i, c)
            p = folder / f"s{c}" / f"part{i}.h5"
            write_activations(p, layers={"x": X[a:b]}, logits=None, labels=y[a:b], ids=np.arange(a, b), classes=["c"],
                              attrs={"model_uuid": "bench", "shard_index": i, "shard_count": c, "row_start": a, "row_stop": b, "total_rows": n})
            parts[c].append(p)
    return parts


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    from knntools.io.datasets import load_dataset

    train = load_dataset("fashion-mnist", split="train", data_dir=FMNIST_DIR).X.reshape(-1, 784)[: args.n_base]
    test = load_dataset("fashion-mnist", split="test", data_dir=FMNIST_DIR).X.reshape(-1, 784)[: args.n_query]
    X, Q = np.ascontiguousarray(train, np.float32), np.ascontiguousarray(test, np.float32)
    if args.dim != 784:
        R = (np.random.default_rng(args.seed).standard_normal((784, args.dim)) / np.sqrt(args.dim)).astype(np.float32)
        X, Q = np.ascontiguousarray(X @ R), np.ascontiguousarray(Q @ R)
        return X, Q, f"Fashion-MNIST pixels / 255, Gaussian random projection to {args.dim}-d"
    return X, Q, "Fashion-MNIST pixels / 255 (784-d)"


def largest_shard_rows(n: int, count: int) -> int:
    from knntools.io.shards import shard_rows

    return max(b - a for a, b in (shard_rows(n, i, count) for i in range(count)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FALL SHORT"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    counts = [int(c) for c in args.shards.split(",")]
    backends = args.backends.split(",")
    from knntools.search.base import recall_at_k

    X, Q, what = load_data(args)
    ctx = tempfile.TemporaryDirectory(prefix="bench-shards-") if args.workdir is None else None
    folder = Path(ctx.name) if ctx else args.workdir
    folder.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    try:
        parts = write_files(folder, X, Q, sorted(set(counts) | {1}))  # 1 shard = the whole file (the unsharded reference)
        base = {"k": args.k, "num_threads": args.num_threads, "seed": args.seed, "repeat": args.repeat, "test": str(folder / "test.h5")}
        rows: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        builds: dict[int, dict[str, Any]] = {}
        indexes = {c: [p.with_suffix(".x.hnsw") for p in ps] for c, ps in parts.items()}
        if "hnsw" in backends:
            for c in sorted(set(counts) | {1}):
                builds[c] = run_child({**base, "backend": "hnsw", "mode": "build", "parts": [str(p) for p in parts[c]], "dests": [str(p) for p in indexes[c]]})
        for b in backends:
            whole_res = folder / f"whole_{b}.npy"
            whole = run_child({**base, "backend": b, "mode": "whole", "parts": [str(parts[1][0])], "indexes": [str(indexes[1][0])], "result": str(whole_res)})
            whole["recall"] = None
            whole["index_bytes"] = indexes[1][0].stat().st_size if b == "hnsw" else 2 * min(X.nbytes, 256 << 20)
            rows[b].append({"shards": "unsharded", **whole})
            for c in counts:
                res = folder / f"sharded_{b}_{c}.npy"
                r = run_child({**base, "backend": b, "mode": "sharded", "parts": [str(p) for p in parts[c]], "indexes": [str(p) for p in indexes[c]], "result": str(res)})
                r["index_bytes"] = max(p.stat().st_size for p in indexes[c]) if b == "hnsw" else 2 * min(largest_shard_rows(len(X), c) * X.shape[1] * 4, 256 << 20)
                r["shards"] = c
                rows[b].append(r)
        exact_ref = np.load(folder / "whole_exact.npy") if "exact" in backends else None
        for b in backends:
            for r in rows[b]:
                name = f"whole_{b}.npy" if r["shards"] == "unsharded" else f"sharded_{b}_{r['shards']}.npy"
                r["recall"] = recall_at_k(np.load(folder / name), exact_ref) if exact_ref is not None else None
    finally:
        if ctx:
            ctx.cleanup()
    total_s = time.perf_counter() - t_all
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())

    nq = len(Q)
    cmd = "python benchmarks/bench_shards.py " + shlex.join(sys.argv[1:])
    lines = [
        "# Search across shards",
        "",
        f"`{cmd}` — {started}, {platform.machine()} with {os.cpu_count()} cores, {args.num_threads} threads; ran {total_s:.0f} s.",
        f"Machine load (shared with other jobs): `{uptime}` at start; load average {load_end} at the end.",
        "",
        f"Data: {what}; {len(X)} base rows, {nq} queries, k = {args.k}. hnsw: M = 16, ef_construction = 200, ef = max(200, 2k) per shard. "
        f"Search times: minimum of {args.repeat} runs.",
        "Each configuration ran in a fresh subprocess. *Search peak*: the peak resident size while loading the index(es) and searching, above "
        "the resident size once the libraries were loaded and the queries read (peak reset through `/proc/self/clear_refs`); *process peak*: `ru_maxrss` "
        "of the whole subprocess, dominated by importing torch/h5py. Subprocesses ran with `MALLOC_MMAP_THRESHOLD_=131072` (freed buffers leave the resident size).",
        "",
        "Goals: throughput >= 0.8x the unsharded index (sequential: one process searches every shard in turn; per job: each shard "
        "searched by its own job, as in a SLURM array, queries/s of the slowest shard); search peak <= largest shard's index + 160 MiB "
        "(index: an hnsw shard's graph file; for exact, 2 x the shard's float32 rows — the rows read plus their augmented copy — capped at 2 x the 256 MB block).",
        "",
    ]
    if builds:
        lines += ["## hnsw build (per shard, seconds)", "", "| shards | rows per shard | build s per shard (max) | total build s | index file per shard (max) | build peak per shard (max) |", "|---|---|---|---|---|---|"]
        for c in counts:
            bs = builds[c]["build_s"]
            size = rows["hnsw"][1 + counts.index(c)]["index_bytes"]
            lines.append(f"| {c} | {largest_shard_rows(len(X), c)} | {max(bs):.1f} | {sum(bs):.1f} | {size / MIB:.1f} MiB ({size / largest_shard_rows(len(X), c):.0f} B/row) | {max(builds[c]['build_peak']) / MIB:.0f} MiB ({max(builds[c]['build_peak']) / largest_shard_rows(len(X), c):.0f} B/row) |")
        lines.append("")
    for b in backends:
        whole = rows[b][0]
        qps0 = nq / whole["search_s"]
        lines += [f"## {b}", "",
                  "| shards | load s | search s | queries/s (sequential) | ratio | goal | queries/s per job | ratio | goal | merge s | recall@k vs exact | largest shard's index | search peak | limit | goal | process peak |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows[b]:
            qps = nq / r["search_s"]
            limit = r["index_bytes"] + SLACK_BYTES
            rec = f"{r['recall']:.4f}" if r["recall"] is not None else "-"
            if r["shards"] == "unsharded":
                lines.append(f"| unsharded | {r['load_s']:.2f} | {r['search_s']:.2f} | {qps:.0f} | 1.00x | | | | | | {rec} | {r['index_bytes'] / MIB:.1f} MiB | {r['search_peak'] / MIB:.0f} MiB | {limit / MIB:.0f} MiB | {verdict(r['search_peak'] <= limit)} | {r['rss'] / MIB:.0f} MiB |")
                continue
            job_qps = nq / max(r["per_shard_search_s"])
            lines.append(
                f"| {r['shards']} | {r['load_s']:.2f} | {r['search_s']:.2f} | {qps:.0f} | {qps / qps0:.2f}x | {verdict(qps >= 0.8 * qps0)} | {job_qps:.0f} | {job_qps / qps0:.2f}x | "
                f"{verdict(job_qps >= 0.8 * qps0)} | {r['merge_s']:.3f} | {rec} | {r['index_bytes'] / MIB:.1f} MiB | {r['search_peak'] / MIB:.0f} MiB | {limit / MIB:.0f} MiB | {verdict(r['search_peak'] <= limit)} | {r['rss'] / MIB:.0f} MiB |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
