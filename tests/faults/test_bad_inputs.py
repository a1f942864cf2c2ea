"""Every command through its bad inputs and bad outputs (the table in cases.py).

Each case asserts: the exit code, exactly one stderr line with no traceback, no new file in the
case folder or the input folder (no output, no ``.partial``), every pre-existing file unchanged
(SHA-256), and no pickle payload run. Most cases run in-process (``knntools.cli.main``; imports
cost ~2 s per process); PROCESS_CASES run again as real processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .cases import INPUT_CASES, OUTPUT_FAULTS, PROCESS_CASES, WRITERS, Case, output_cases
from .conftest import make_readonly, record, undo_readonly
from .harness import diff, run_inprocess, run_process, snapshot

ALL_CASES = INPUT_CASES + output_cases()
BY_ID = {c.id: c for c in ALL_CASES}


def _expand(argv: tuple[str, ...], inputs: dict[str, Path], out: Path) -> list[str]:
    res = []
    for a in argv:
        if a.startswith("@"):
            name = a[1:]
            res.append(str(inputs[name] if name in inputs else inputs["m.pt"].parent / name))
        else:
            res.append(a.replace("{o}", str(out)))
    return res


def _prepare(case: Case, work: Path) -> tuple[Path, str | None]:
    """Make the case folder: an existing output (exists-no-force), a folder, a file, a read-only folder."""
    writer = case.id.split("/")[0]
    suffix = WRITERS[writer][1] if writer in WRITERS else ".h5"
    (work / "existing-other.txt").write_text("a file the failed run must leave alone\n")
    fault = case.id.split("/", 1)[1]
    ro = None
    if fault == "missing-folder":
        out = work / "no-such-folder" / f"out{suffix}"
    elif fault == "output-is-folder":
        out = work / "a-folder"
        out.mkdir()
    elif fault == "file-as-folder":
        (work / "a-file").write_text("x\n")
        out = work / "a-file" / f"out{suffix}"
    elif fault == "exists-no-force":
        out = work / f"out{suffix}"
        out.write_bytes(b"an existing output: must not change\n")
    elif fault == "readonly-folder":
        folder = work / "ro"
        folder.mkdir()
        (folder / "kept.txt").write_text("kept\n")
        ro = make_readonly(folder)
        if ro is None:
            pytest.skip("cannot make a read-only folder here (root without chattr +i)")
        out = folder / f"out{suffix}"
    else:
        out = work / f"out{suffix}"
    return out, ro


def check_case(case: Case, inputs: dict[str, Path], work: Path, runner, kind: str) -> None:
    out, ro = _prepare(case, work)
    g = inputs["m.pt"].parent
    marker = inputs["marker"]
    try:
        before = snapshot(g, work)
        r = runner(_expand(case.argv, inputs, out), work)
        after = snapshot(g, work)
    finally:
        undo_readonly(out.parent, ro)
    new, changed, removed = diff(before, after)
    lines = r.stderr_lines
    tb = "Traceback" in r.stderr
    entry = {
        "kind": kind, "id": case.id, "code": r.code, "exit_ok": r.code == case.code, "stderr_lines": len(lines),
        "traceback": tb, "new_files": len(new), "partials": sum(p.endswith(".partial") for p in new),
        "changed": len(changed) + len(removed), "payload_ran": marker.exists(), "seconds": round(r.seconds, 3),
        "stderr": r.stderr[-400:], "new": [Path(p).name for p in new],
    }
    one_line = (sum(": error:" in line for line in lines) == 1 and bool(lines) and ": error:" in lines[-1]) if case.streaming else len(lines) == 1
    entry["one_line"] = one_line
    entry["clean"] = entry["exit_ok"] and one_line and not tb and not new and not changed and not removed and not entry["payload_ran"]
    record(entry)
    detail = f"{case.id}: exit {r.code}\nstderr: {r.stderr}\nstdout: {r.stdout[:500]}"
    assert r.code == case.code, detail
    assert not tb, detail
    if case.streaming:  # progress lines, then the one error line
        assert sum(": error:" in line for line in lines) == 1 and ": error:" in lines[-1], detail
    else:
        assert len(lines) == 1, detail
    assert lines[-1].startswith("knntools") and ": error:" in lines[-1], detail
    assert not new, f"{detail}\nnew files: {new}"
    assert not changed and not removed, f"{detail}\nchanged: {changed} removed: {removed}"
    assert not marker.exists(), f"{detail}\na pickle payload ran"


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_fault(case: Case, inputs, tmp_path: Path) -> None:
    kind = "output" if case.id.split("/", 1)[1] in dict(OUTPUT_FAULTS) else "input"
    check_case(case, inputs, tmp_path, run_inprocess, kind)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", PROCESS_CASES)
def test_fault_process(case_id: str, inputs, tmp_path: Path) -> None:
    check_case(BY_ID[case_id], inputs, tmp_path, run_process, "process")


@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_good_run(name: str, inputs, tmp_path: Path) -> None:
    """The table's good command lines succeed (so each fault case fails for its fault only) and
    leave exactly their output(s), no temp file."""
    argv, suffix = WRITERS[name]
    out = tmp_path / f"out{suffix}"
    r = run_inprocess(_expand(argv, inputs, out), tmp_path)
    record({"kind": "good", "id": name, "code": r.code, "exit_ok": r.code == 0, "traceback": "Traceback" in r.stderr,
            "clean": r.code == 0, "seconds": round(r.seconds, 3)})
    assert r.code == 0, r.stderr
    assert out.exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]


def test_inputs_unchanged_and_case_count(inputs) -> None:
    """The table has at least 80 cases and covers every command."""
    from knntools.cli import COMMANDS

    assert len(ALL_CASES) >= 80
    covered = {c.argv[0] for c in ALL_CASES}
    assert covered >= {name for name, _m, _f in COMMANDS}, sorted({n for n, _m, _f in COMMANDS} - covered)
