"""Start-up cost of every ``knntools`` command: whole-process time and imports beyond what the work needs.

For every command, in fresh processes (``sys.executable -m knntools``):

* ``CMD --help``: wall time (best of ``--repeat``) minus a bare ``python -c pass``, and the heavy
  libraries it imported (``-X importtime``; none should be);
* a tiny real run on the bundled digits set (train an MLP for one epoch, embed, index, dknn,
  probe, noise, info, ...): wall time, total import time, the import time of the libraries the
  work needs (``NEEDED``: e.g. torch for train, hnswlib for an hnsw index), and the difference —
  the command's start-up overhead beyond those libraries (goal <= 0.3 s, issue 15).

Import times come from ``python -X importtime``: a library's cumulative time is counted once, at
its first import (nested imports of other needed libraries are inside it). Run from the
repository root::

    python benchmarks/bench_startup.py -o benchmarks/results/startup.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Top-level libraries whose import a command's work needs (anything else is overhead).
NEEDED: dict[str, set[str]] = {
    "info": {"numpy", "h5py"},
    "noise": {"numpy", "h5py", "sklearn"},  # sklearn: the bundled digits set
    "train": {"numpy", "h5py", "sklearn", "torch"},
    "embed": {"numpy", "h5py", "sklearn", "torch"},
    "index": {"numpy", "h5py", "hnswlib"},
    "dknn": {"numpy", "h5py", "torch", "threadpoolctl"},  # exact search: GEMM + torch top-k
    "probe": {"numpy", "h5py", "sklearn", "torch", "threadpoolctl"},
    "features": {"numpy", "h5py", "sklearn", "scipy", "pandas"},
    "oversample": {"numpy", "h5py", "sklearn", "imblearn", "torch", "threadpoolctl"},
    "seq2knn": {"numpy", "h5py", "sklearn", "torch", "threadpoolctl", "pandas"},
    "lasenn": {"numpy", "h5py", "sklearn", "torch", "threadpoolctl"},
    "distill-knet": {"numpy", "h5py", "sklearn", "torch", "threadpoolctl"},
}
HEAVY = ("torch", "torchvision", "hnswlib", "sklearn", "scipy", "matplotlib", "pandas", "imblearn", "h5py", "numpy")
_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def parse_importtime(stderr: str, needed: set[str]) -> dict[str, Any]:
    """Total import seconds, seconds of the needed libraries (each counted once), the heavy modules seen
    and the largest imports that are overhead.

    A module belongs to a needed library when its top-level package is one (``torch._dynamo``, which
    ``torch.optim.Optimizer`` imports on first use, is torch's). Overhead entries are the outermost
    imports that are not needed, with their cumulative seconds minus the needed libraries inside them.
    """
    pending: list[tuple[int, str, float, float]] = []  # (depth, name, cumulative s, needed s inside)
    seen: set[str] = set()
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        cum = int(m.group(2)) / 1e6
        depth = len(m.group(3)) // 2
        name = m.group(4)
        seen.add(name.split(".")[0])
        inner = 0.0
        while pending and pending[-1][0] > depth:
            inner += pending.pop()[3]
        pending.append((depth, name, cum, cum if name.split(".")[0] in needed else inner))
    top = sorted(((p[2] - p[3], p[1]) for p in pending if p[2] - p[3] > 0.005), reverse=True)
    return {"import_s": sum(p[2] for p in pending), "needed_s": sum(p[3] for p in pending),
            "heavy": sorted(h for h in HEAVY if h in seen), "overhead_top": top[:3]}


def run(argv: list[str], env: dict[str, str], importtime: bool = False) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "knntools", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"knntools {shlex.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc


def tiny_runs(tmp: Path) -> list[tuple[str, list[str]]]:
    """(command, argv) of a small real run of each command, in dependency order."""
    t = str(tmp)
    return [
        ("noise", ["noise", "--dataset", "digits", "--rate", "0.2", "-o", f"{t}/noise.h5", "--force"]),
        ("features", ["features", "wine", "-o", f"{t}/wine.h5", "--force"]),
        ("train", ["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", "-o", f"{t}/m.pt", "--force"]),
        ("embed", ["embed", f"{t}/m.pt", "--dataset", "digits", "--split", "train", "--layers", "all", "-o", f"{t}/train.h5", "--force"]),
        ("embed", ["embed", f"{t}/m.pt", "--dataset", "digits", "--split", "test", "--layers", "all", "-o", f"{t}/test.h5", "--force"]),
        ("info", ["info", f"{t}/train.h5"]),
        ("index", ["index", f"{t}/train.h5", "--layers", "penultimate", "-o", f"{t}/train.hnsw", "--force"]),
        ("dknn", ["dknn", f"{t}/train.h5", f"{t}/test.h5", "-k", "10", "--calibration", "100", "-o", f"{t}/dknn.h5", "--force"]),
        ("lasenn", ["lasenn", f"{t}/train.h5", f"{t}/test.h5", "--layer", "penultimate", "-k", "3", "--w-q", "0.88", "-o", f"{t}/lasenn.h5", "--force"]),
        ("distill-knet", ["distill-knet", f"{t}/train.h5", "--layer", "penultimate", "--k-range", "1:21", "--epochs", "2", "-o", f"{t}/knet.pt", "--force"]),
        ("probe", ["probe", f"{t}/train.h5", "--test", f"{t}/test.h5", "--layers", "all", "--classifiers", "knn", "-o", f"{t}/probe.h5", "--force"]),
        ("seq2knn", ["seq2knn", f"{t}/wine.h5", "--model", "v2ls", "-k", "3", "--epochs", "2", "-o", f"{t}/seq.pt", "--force"]),
        ("oversample", ["oversample", f"{t}/wine.h5", "--method", "smote", "-o", f"{t}/bal.h5", "--force"]),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per --help timing (best is kept)")
    ap.add_argument("--skip-tiny", action="store_true", help="only the --help timings")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    # An installed package has its bytecode compiled (pip does it); PYTHONDONTWRITEBYTECODE would make
    # every process recompile knntools' sources (about 65 modules) and count that as start-up.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "knntools")], env=env, check=False)
    sys.path.insert(0, str(ROOT))
    from knntools.cli import COMMANDS

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    bare = min(_time([sys.executable, "-c", "pass"]) for _ in range(args.repeat))
    lines = ["# Start-up benchmark", "",
             f"`python benchmarks/bench_startup.py {shlex.join(sys.argv[1:])}` — {started}; {os.cpu_count()} cores, load average at start {load}; "
             f"bare `python -c pass`: {bare:.3f} s. Fresh processes, OMP_NUM_THREADS=1, knntools' bytecode compiled first (as pip does; PYTHONDONTWRITEBYTECODE unset for the children).", "",
             "## `knntools CMD --help`", "", "| command | wall s (best) | beyond bare python s | heavy modules imported |", "|---|---|---|---|"]
    help_rows = []
    for name, _, _ in [("--help", None, None), *COMMANDS]:
        argv_ = ["--help"] if name == "--help" else [name, "--help"]
        wall = min(run(argv_, env)[0] for _ in range(args.repeat))
        _, proc = run(argv_, env, importtime=True)
        info = parse_importtime(proc.stderr, set())
        help_rows.append((name, wall, info["heavy"]))
        lines.append(f"| {name} | {wall:.3f} | {wall - bare:.3f} | {', '.join(info['heavy']) or 'none'} |")
        print(f"help {name}: {wall:.3f} s {info['heavy']}", file=sys.stderr, flush=True)
    if not args.skip_tiny:
        lines += ["", "## A tiny real run of each command (digits)", "",
                  "Overhead = import time of everything but the libraries the work needs (`NEEDED` in the script); goal <= 0.3 s.", "",
                  "| command | wall s | imports s | needed libraries s | overhead s | goal | largest overhead imports (s) | heavy modules imported |", "|---|---|---|---|---|---|---|---|"]
        with tempfile.TemporaryDirectory() as tmp:
            for name, argv_ in tiny_runs(Path(tmp)):
                wall, proc = run(argv_, env, importtime=True)
                info = parse_importtime(proc.stderr, NEEDED.get(name, set()))
                over = info["import_s"] - info["needed_s"]
                lines.append(f"| `{shlex.join(argv_).replace(tmp, '$T')}` | {wall:.2f} | {info['import_s']:.2f} | {info['needed_s']:.2f} | {over:.2f} | "
                             f"{'PASS' if over <= 0.3 else 'FALL SHORT'} | {', '.join(f'{n} {t:.2f}' for t, n in info['overhead_top'])} | {', '.join(info['heavy'])} |")
                print(f"tiny {name}: wall {wall:.2f} imports {info['import_s']:.2f} needed {info['needed_s']:.2f}", file=sys.stderr, flush=True)
    lines += ["", f"Load average at end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
