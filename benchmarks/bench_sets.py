"""Benchmark sharded activation sets: ``knntools merge`` (copy and ``--virtual``) and reading a set.

Writes N synthetic parts (``--rows`` × ``--dim`` float32, random normal) in a scratch folder, then

1. ``knntools merge PART... -o merged.h5`` and ``knntools merge --virtual PART... -o set.h5`` in
   fresh processes: wall time and peak resident memory (the child's own ``VmHWM``, imports
   included) — the copy streams in chunks, so its peak must not grow with the data;
2. reading the layer of the plain file and of the set through :class:`knntools.io.h5.KFile`:
   open time, a full scan in 8192-row blocks (``iter_rows``) and 5000 random rows
   (``read_layer(rows)``), alternating plain/set ``--repeats`` times (median reported).

Run from the repository root::

    python benchmarks/bench_sets.py --rows 400000 --dim 256 --parts 4 -o docs/results/sets_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


#: Runs ``knntools ARGS`` and prints the process's peak RSS (VmHWM of its own address space, which
#: unlike ``ru_maxrss`` does not inherit the parent's peak across fork/exec) as the last stderr line.
_WRAP = """
import sys
from knntools.cli import main
try:
    main(sys.argv[1:])
finally:
    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
    print('VmHWM_kB', hwm, file=sys.stderr)
"""


def child(args: list[str]) -> dict:
    """Run ``knntools ARGS`` in a fresh process; wall seconds and its peak RSS in MiB."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"knntools {' '.join(args)} failed: {proc.stderr}")
    hwm = int(proc.stderr.strip().splitlines()[-1].split()[1])
    return {"wall_s": wall, "peak_rss_mib": hwm / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("-o", "--output", type=Path, default=None, help="JSON results")
    args = ap.parse_args()

    from knntools.io.h5 import KFile
    from knntools.io.kinds import write_activations
    from knntools.io.shards import shard_rows

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_sets_"))
    work.mkdir(parents=True, exist_ok=True)
    n, d, N = args.rows, args.dim, args.parts
    rng = np.random.default_rng(0)
    classes = [str(c) for c in range(10)]
    parts = []
    for i in range(N):
        a, b = shard_rows(n, i, N)
        X = rng.standard_normal((b - a, d), dtype=np.float32)
        p = work / f"part{i}.h5"
        write_activations(p, layers={"h": X}, logits=None, labels=rng.integers(0, 10, b - a), ids=np.arange(a, b), classes=classes,
                          attrs={"dataset": "synthetic", "split": "train", "model_uuid": "bench", "shard_index": i, "shard_count": N,
                                 "row_start": a, "row_stop": b, "total_rows": n}, force=True)
        parts.append(str(p))
    data_mib = n * d * 4 / 2**20
    knn = ["merge", "-q", "--force"]
    res = {"rows": n, "dim": d, "parts": N, "layer_mib": data_mib,
           "merge_copy": child(knn + parts + ["-o", str(work / "merged.h5")]),
           "merge_virtual": child(knn + ["--virtual"] + parts + ["-o", str(work / "set.h5")])}
    reads: dict[str, dict[str, list[float]]] = {"plain": {}, "set": {}}
    for _ in range(args.repeats):
        for tag, fn in (("plain", work / "merged.h5"), ("set", work / "set.h5")):
            t = time.perf_counter()
            with KFile(fn) as kf:
                t_open = time.perf_counter() - t
                t = time.perf_counter()
                for _, blk in kf.iter_rows("layers/h", 8192):
                    pass
                t_scan = time.perf_counter() - t
                rows = np.sort(rng.choice(n, 5000, replace=False))
                t = time.perf_counter()
                kf.read_layer("h", rows)
                t_rand = time.perf_counter() - t
            for k, v in (("open_s", t_open), ("scan_s", t_scan), ("random_5000_s", t_rand)):
                reads[tag].setdefault(k, []).append(v)
    res["read"] = {tag: {k: statistics.median(v) for k, v in r.items()} for tag, r in reads.items()}
    for tag in ("plain", "set"):
        res["read"][tag]["scan_mib_per_s"] = data_mib / res["read"][tag]["scan_s"]
    text = json.dumps(res, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if args.dir is None:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
