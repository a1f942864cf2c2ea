"""The fault table: every command line here must fail cleanly (docs/reliability.md).

Adding a command: one row in :data:`WRITERS` (a good command line with ``{o}`` for its output;
the suite checks that it succeeds, then derives the output faults from it) and its bad-input rows
in :data:`INPUT_CASES`. In argv, ``@NAME`` is a file of the session's input folder (built by
:func:`harness.build_inputs`), ``{o}`` the output path of the case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One bad command line: ``argv`` must exit with ``code``, one stderr line, nothing written."""

    id: str
    argv: tuple[str, ...]
    code: int = 2
    #: The fault is only seen while data is streamed (NaN or a damaged chunk in a layer read block
    #: by block): progress lines may come first; the error is still one line, and the last.
    streaming: bool = False


#: name -> (good argv with {o} for the output, output suffix). One row per writing command form.
WRITERS: dict[str, tuple[tuple[str, ...], str]] = {
    "noise": (("noise", "--rate", "0.2", "-o", "{o}"), ".h5"),
    "features": (("features", "@table.csv", "--label-column", "y", "-o", "{o}"), ".h5"),
    "train": (("train", "--arch", "mlp", "--arch-kwargs", '{"hidden": 8}', "--epochs", "1", "--subset", "300", "--num-threads", "1", "-o", "{o}"), ".pt"),
    "embed": (("embed", "@m.pt", "--split", "test", "-o", "{o}"), ".h5"),
    "index-query": (("index", "@tr.h5", "--layers", "penultimate", "--query", "@te.h5", "-k", "3", "-o", "{o}"), ".h5"),
    "index-save": (("index", "@tr.h5", "--layers", "penultimate", "-o", "{o}"), ".hnsw"),
    "seq2knn": (("seq2knn", "@feat.h5", "-k", "3", "--epochs", "1", "--hidden", "4", "--num-threads", "1", "-o", "{o}"), ".pt"),
    "oversample": (("oversample", "@feat.h5", "--method", "smote", "-o", "{o}"), ".h5"),
    "dknn": (("dknn", "@tr.h5", "@te.h5", "-k", "5", "--calibration", "100", "-o", "{o}"), ".h5"),
    "lasenn": (("lasenn", "@tr.h5", "@te.h5", "-k", "5", "-o", "{o}"), ".h5"),
    "distill-knet": (("distill-knet", "@tr.h5", "--layer", "penultimate", "--k-range", "1:11", "--epochs", "1", "--hidden", "4", "--num-threads", "1", "-o", "{o}"), ".pt"),
    "distill-knet-eval": (("distill-knet", "@knet.pt", "--eval", "@te.h5", "--train", "@tr.h5", "--k-sweep", "1,5", "-o", "{o}"), ".h5"),
    "embed-shard": (("embed", "@m.pt", "--split", "test", "--shard", "1/2", "-o", "{o}"), ".h5"),
    "merge": (("merge", "@sh0.h5", "@sh1.h5", "-o", "{o}"), ".h5"),
    "merge-virtual": (("merge", "--virtual", "@sh1.h5", "@sh0.h5", "-o", "{o}"), ".h5"),
    "probe": (("probe", "@tr.h5", "--test", "@te.h5", "--classifiers", "knn", "--layers", "penultimate", "-o", "{o}"), ".h5"),
}

#: Output faults applied to every writer: (id, how the output path is made, expected exit).
#: missing: a folder that does not exist; isdir: an existing folder; fileparent: a regular file in
#: place of the folder; readonly: a folder nobody may write (see conftest); exists: an existing
#: file without --force.
OUTPUT_FAULTS: tuple[tuple[str, int], ...] = (("missing-folder", 2), ("output-is-folder", 2), ("file-as-folder", 2),
                                               ("readonly-folder", 2), ("exists-no-force", 2))


def _with(argv: tuple[str, ...], *extra: str, drop: int = 0) -> tuple[str, ...]:
    return tuple(argv[: len(argv) - drop]) + tuple(extra)


def _w(name: str) -> tuple[str, ...]:
    return WRITERS[name][0]


def _replace(argv: tuple[str, ...], old: str, new: str) -> tuple[str, ...]:
    assert old in argv, (old, argv)
    return tuple(new if a == old else a for a in argv)


def _input_cases() -> list[Case]:
    c: list[Case] = []

    def add(id_: str, argv: tuple[str, ...], code: int = 2, streaming: bool = False) -> None:
        c.append(Case(id_, tuple(argv), code, streaming))

    # ---- noise -------------------------------------------------------------------------------
    add("noise/rate>1", _replace(_w("noise"), "0.2", "1.5"))
    add("noise/rate<0", _replace(_w("noise"), "0.2", "-0.1"))
    add("noise/unknown-dataset", _w("noise") + ("--dataset", "nosuchset"))
    add("noise/unknown-kind", _w("noise") + ("--kind", "nosuchkind"))
    add("noise/empty-csv", _w("noise") + ("--dataset", "@empty.csv", "--label-column", "y"))
    add("noise/unknown-option", _w("noise") + ("--nosuch-option",))
    # ---- info --------------------------------------------------------------------------------
    # (info reads metadata only: a damaged data chunk is found by the command that reads it)
    for name in ("missing.h5", "notes.txt", "trunc.h5", "v9.h5", "notknn.h5", "evil.pt", "trunc.pt", "corrupt.h5.partial"):
        add(f"info/{name}", ("info", f"@{name}"))
    # ---- features ----------------------------------------------------------------------------
    for name in ("empty.csv", "nonnum.csv", "header.csv", "missing.csv"):
        add(f"features/{name}", _replace(_w("features"), "@table.csv", f"@{name}"))
    add("features/unknown-column", _replace(_w("features"), "y", "nosuch"))
    add("features/test-size>0.9", _w("features") + ("--test-size", "1.5", "--test-output", "{o}.test.h5"))
    add("features/unknown-dataset", _replace(_w("features"), "@table.csv", "nosuchset"))
    # ---- train -------------------------------------------------------------------------------
    add("train/unknown-dataset", _w("train") + ("--dataset", "nosuchset"))
    add("train/unknown-arch", _replace(_w("train"), "mlp", "nosucharch"))
    add("train/epochs=0", _replace(_w("train"), "1", "0"))
    add("train/lr<0", _w("train") + ("--lr", "-1"))
    add("train/labels-wrong-kind", _w("train") + ("--labels", "@te.h5"))
    add("train/labels-truncated", _w("train") + ("--labels", "@trunc.h5"))
    add("train/labels-not-hdf5", _w("train") + ("--labels", "@notes.txt"))
    add("train/resume-malicious-pickle", _w("train") + ("--resume", "@evil.pt"))
    add("train/resume-wrong-checkpoint", _w("train") + ("--resume", "@knet.pt"))
    add("train/resume-truncated", _w("train") + ("--resume", "@trunc.pt"))
    # ---- embed -------------------------------------------------------------------------------
    for name in ("evil.pt", "knet.pt", "s2k.pt", "trunc.pt", "notes.txt", "missing.pt"):
        add(f"embed/model-{name}", _replace(_w("embed"), "@m.pt", f"@{name}"))
    add("embed/unknown-layer", _w("embed") + ("--layers", "nosuchlayer"))
    add("embed/unknown-dataset", _w("embed") + ("--dataset", "nosuchset"))
    add("embed/labels-wrong-kind", _w("embed") + ("--labels", "@te.h5"))
    add("embed/eps<0", _w("embed") + ("--attack", "fgsm", "--eps", "-0.1"))
    add("embed/unknown-attack", _w("embed") + ("--attack", "nosuch"))
    # ---- index -------------------------------------------------------------------------------
    q = _w("index-query")
    for name in ("notes.txt", "trunc.h5", "corrupt.h5", "v9.h5", "nan.h5", "lab.h5", "notknn.h5", "missing.h5"):
        add(f"index/data-{name}", _replace(q, "@tr.h5", f"@{name}"), streaming=name in ("corrupt.h5", "nan.h5"))
    add("index/unknown-layer", _replace(q, "penultimate", "nosuchlayer"))
    add("index/k=0", _replace(q, "3", "0"))
    add("index/k>N", _replace(q, "3", "100000"))
    add("index/query-other-model", _replace(q, "@te.h5", "@othermodel.h5"))
    add("index/query-other-width", _replace(q, "@te.h5", "@wider.h5"))
    add("index/query-nan", _replace(q, "@te.h5", "@nan.h5"), streaming=True)
    add("index/index-not-an-index", q + ("--index", "@knet.pt"))
    # ---- seq2knn -----------------------------------------------------------------------------
    s = _w("seq2knn")
    add("seq2knn/wrong-kind", _replace(s, "@feat.h5", "@lab.h5"))
    add("seq2knn/truncated", _replace(s, "@feat.h5", "@trunc.h5"))
    add("seq2knn/k=0", _replace(s, "3", "0"))
    add("seq2knn/k>N", _replace(s, "3", "100000"))
    add("seq2knn/eval-other-width", s + ("--eval", "@te.h5"))
    add("seq2knn/val-size>1", s + ("--val-size", "1.5"))
    add("seq2knn/dropout>1", s + ("--dropout", "2"))
    add("seq2knn/unknown-model", s + ("--model", "nosuch"))
    add("seq2knn/nan", _replace(s, "@feat.h5", "@nan.h5"))
    # ---- oversample --------------------------------------------------------------------------
    o = _w("oversample")
    add("oversample/model-malicious-pickle", _replace(o, "smote", "v2vsls") + ("--model", "@evil.pt"))
    add("oversample/model-wrong-checkpoint", _replace(o, "smote", "v2vsls") + ("--model", "@knet.pt"))
    add("oversample/model-train-checkpoint", _replace(o, "smote", "v2vsls") + ("--model", "@m.pt"))
    add("oversample/unknown-method", _replace(o, "smote", "nosuch"))
    add("oversample/k-neighbors=0", o + ("-k", "0"))
    add("oversample/k-neighbors>N", o + ("-k", "100000"))
    add("oversample/eval-other-width", o + ("--eval", "@te.h5"))
    add("oversample/wrong-kind", _replace(o, "@feat.h5", "@lab.h5"))
    # ---- dknn --------------------------------------------------------------------------------
    d = _w("dknn")
    add("dknn/eval-other-model", _replace(d, "@te.h5", "@othermodel.h5"))
    add("dknn/eval-other-width", _replace(d, "@te.h5", "@wider.h5"))
    add("dknn/eval-nan", _replace(d, "@te.h5", "@nan.h5"), streaming=True)
    add("dknn/eval-labels-out-of-range", _replace(d, "@te.h5", "@badlab.h5"))
    add("dknn/eval-labels-out-of-range-no-classes", _replace(d, "@te.h5", "@badlab_nocls.h5"))
    add("dknn/train-labels-out-of-range", _replace(d, "@tr.h5", "@badlab_tr.h5"))
    add("dknn/k=0", _replace(d, "5", "0"))
    add("dknn/k>N", _replace(d, "5", "100000"))
    add("dknn/calibration>N", _replace(d, "100", "100000"))
    add("dknn/unknown-layer", d + ("--layers", "nosuchlayer"))
    add("dknn/eval-corrupt", _replace(d, "@te.h5", "@corrupt.h5"), streaming=True)
    add("dknn/train-corrupt", _replace(d, "@tr.h5", "@corrupt_tr.h5"), streaming=True)
    add("lasenn/train-corrupt", _replace(_w("lasenn"), "@tr.h5", "@corrupt_tr.h5"))
    add("index/data-corrupt-large", _replace(q, "@tr.h5", "@corrupt_tr.h5"), streaming=True)
    add("dknn/train-truncated", _replace(d, "@tr.h5", "@trunc.h5"))
    add("dknn/train-version", _replace(d, "@tr.h5", "@v9.h5"))
    add("dknn/eval-wrong-kind", _replace(d, "@te.h5", "@lab.h5"))
    # ---- lasenn ------------------------------------------------------------------------------
    la = _w("lasenn")
    add("lasenn/test-labels-out-of-range", _replace(la, "@te.h5", "@badlab.h5"))
    add("lasenn/test-labels-out-of-range-no-classes", _replace(la, "@te.h5", "@badlab_nocls.h5"))
    add("lasenn/train-labels-out-of-range", _replace(la, "@tr.h5", "@badlab_tr.h5"))
    add("lasenn/k=0", _replace(la, "5", "0"))
    add("lasenn/k>N", _replace(la, "5", "100000"))
    add("lasenn/w-q>1", la + ("--w-q", "1.5"))
    add("lasenn/w-q<0", la + ("--w-q", "-0.1"))
    add("lasenn/unknown-layer", la + ("--layer", "nosuchlayer"))
    add("lasenn/test-other-width", _replace(la, "@te.h5", "@wider.h5"))
    add("lasenn/test-other-model", _replace(la, "@te.h5", "@othermodel.h5"))
    add("lasenn/test-corrupt", _replace(la, "@te.h5", "@corrupt.h5"))
    add("lasenn/test-nan", _replace(la, "@te.h5", "@nan.h5"))
    add("lasenn/unknown-network-output", la + ("--network-output", "nosuch"))
    # ---- distill-knet ------------------------------------------------------------------------
    kt, ke = _w("distill-knet"), _w("distill-knet-eval")
    add("distill-knet/wrong-kind", _replace(kt, "@tr.h5", "@lab.h5"))
    add("distill-knet/nan", _replace(kt, "@tr.h5", "@nan.h5"))
    add("distill-knet/k-range-0", _replace(kt, "1:11", "0:5"))
    add("distill-knet/k-range>N", _replace(kt, "1:11", "1:100000"))
    add("distill-knet/fixed-k=0", kt + ("-k", "0"))
    add("distill-knet/unknown-layer", _replace(kt, "penultimate", "nosuchlayer"))
    add("distill-knet/malicious-pickle", _replace(ke, "@knet.pt", "@evil.pt"))
    add("distill-knet/train-checkpoint", _replace(ke, "@knet.pt", "@m.pt"))
    add("distill-knet/truncated-checkpoint", _replace(ke, "@knet.pt", "@trunc.pt"))
    add("distill-knet/eval-other-width", _replace(ke, "@te.h5", "@wider.h5"))
    add("distill-knet/eval-labels-out-of-range", _replace(ke, "@te.h5", "@badlab.h5"))
    add("distill-knet/eval-corrupt", _replace(ke, "@te.h5", "@corrupt.h5"))
    # ---- probe -------------------------------------------------------------------------------
    p = _w("probe")
    add("probe/test-other-width", _replace(p, "@te.h5", "@wider.h5"))
    add("probe/test-other-model", _replace(p, "@te.h5", "@othermodel.h5"))
    add("probe/unknown-classifier", _replace(p, "knn", "nosuch"))
    add("probe/k=0", p + ("-k", "0"))
    add("probe/unknown-layer", _replace(p, "penultimate", "nosuchlayer"))
    add("probe/trained-rows-malicious-pickle", p + ("--trained-rows", "@evil.pt"))
    add("probe/trained-rows-wrong-checkpoint", p + ("--trained-rows", "@knet.pt"))
    add("probe/train-corrupt", _replace(p, "@tr.h5", "@corrupt.h5"))
    add("probe/test-labels-out-of-range", _replace(p, "@te.h5", "@badlab.h5"))
    # ---- embed --shard, merge, sets ------------------------------------------------------------
    for spec in ("2/2", "0/0", "-1/2", "abc", "1/2/3"):
        add(f"embed-shard/shard={spec}", _replace(_w("embed-shard"), "1/2", spec))
    m, mv = _w("merge"), _w("merge-virtual")
    for base, tag in ((m, "merge"), (mv, "merge-virtual")):
        add(f"{tag}/missing-shard", tuple(a for a in base if a != "@sh1.h5"))
        add(f"{tag}/uuid-mismatch", _replace(base, "@sh1.h5", "@sh1_other.h5"))
        add(f"{tag}/overlap", _replace(base, "@sh1.h5", "@sh1of3.h5"))
        add(f"{tag}/duplicate", _replace(base, "@sh1.h5", "@sh0.h5"))
        add(f"{tag}/not-a-shard", _replace(base, "@sh1.h5", "@te.h5"))
        add(f"{tag}/truncated-part", _replace(base, "@sh1.h5", "@trunc.h5"))
        add(f"{tag}/missing-file", _replace(base, "@sh1.h5", "@missing.h5"))
        add(f"{tag}/wrong-kind", _replace(base, "@sh1.h5", "@lab.h5"))
    add("dknn/set-missing-part", _replace(_w("dknn"), "@te.h5", "@set_missing_part.h5"))
    add("lasenn/set-missing-part", _replace(_w("lasenn"), "@tr.h5", "@set_missing_part.h5"))
    add("info/set-missing-part", ("info", "@set_missing_part.h5"))
    return c


INPUT_CASES: list[Case] = _input_cases()


def output_cases() -> list[Case]:
    """The output faults of every writer (:data:`OUTPUT_FAULTS` × :data:`WRITERS`)."""
    return [Case(f"{name}/{fault}", argv, code) for name, (argv, _suffix) in WRITERS.items() for fault, code in OUTPUT_FAULTS]


#: Cases also run as real processes (a fresh interpreter: warnings, atexit, real stderr).
PROCESS_CASES: tuple[str, ...] = ("noise/unknown-option", "info/trunc.h5", "embed/model-evil.pt", "lasenn/test-labels-out-of-range",
                                  "dknn/readonly-folder", "dknn/train-corrupt", "train/exists-no-force", "index/k=0", "probe/trained-rows-wrong-checkpoint")
