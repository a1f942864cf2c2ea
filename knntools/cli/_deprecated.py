"""Old flag spellings that keep working for one release (issue 18: one contract for every command).

:data:`DEPRECATED_FLAGS` is THE table: ``{command: {old_flag: new_flag}}``. :func:`apply_deprecations`
rewrites the old spellings in argv (``OLD VALUE``, ``--old=VALUE`` and, for a short flag, ``-KVALUE``)
before typer parses it, and prints once per old flag::

    knntools CMD: warning: OLD is deprecated, use NEW (OLD will be removed in the next release)

on stderr (not with ``-q/--quiet``). :func:`knntools.cli.main` calls it. To retire a spelling,
delete its row (and the row of docs/cli.md's deprecation list, if any).
"""

from __future__ import annotations

import sys
from typing import Sequence, TextIO

#: command -> {old flag: new flag}. Add a row when a flag is renamed; remove it one release later.
DEPRECATED_FLAGS: dict[str, dict[str, str]] = {
    "seq2knn": {"-K": "-k"},
    "oversample": {"--k-neighbors": "-k"},
    "probe": {"--k": "-k"},
    "lasenn": {"--k": "-k"},
    "index": {"--layer": "--layers"},
    "distill-knet": {"--k": "--k-sweep", "--fixed-k": "--n-neighbors", "--predict-k": "--n-neighbors"},
}


def warning_line(command: str, old: str, new: str) -> str:
    """The one deprecation line printed on stderr."""
    return f"knntools {command}: warning: {old} is deprecated, use {new} ({old} will be removed in the next release)"


def _rewrite(token: str, table: dict[str, str]) -> tuple[str, str | None]:
    """``token`` with an old spelling replaced, and the old flag it used (None when unchanged)."""
    if token in table:
        return table[token], token
    if token.startswith("--") and "=" in token:
        flag, _, value = token.partition("=")
        if flag in table:
            return _attach(table[flag], value), flag
        return token, None
    for old, new in table.items():
        # a short flag with its value attached: -K5
        if _is_short(old) and token.startswith(old) and len(token) > 2:
            return _attach(new, token[2:]), old
    return token, None


def _is_short(flag: str) -> bool:
    return len(flag) == 2 and flag[0] == "-" and flag[1] != "-"


def _attach(flag: str, value: str) -> str:
    """One token giving ``flag`` its ``value``: ``-k5`` for a short flag, ``--layers=fc`` for a long one."""
    return f"{flag}{value}" if _is_short(flag) else f"{flag}={value}"


def apply_deprecations(args: Sequence[str], *, stream: TextIO | None = None) -> list[str]:
    """Rewrite the deprecated flags of the command in ``args`` (argv without the program name).

    Parameters
    ----------
    args : sequence of str
        The command line after ``knntools``; ``args[0]`` is the command.
    stream : text stream, optional
        Where the warnings go (default ``sys.stderr``).

    Returns
    -------
    list of str
        ``args`` with every old spelling replaced by the new one (tokens after ``--`` untouched).
        One warning line per old flag used, unless ``-q``/``--quiet`` is among the arguments.
    """
    out = [str(a) for a in args]
    if not out or (out[0] not in DEPRECATED_FLAGS and out[0] not in VALUE_REWRITES):
        return out
    command, table = out[0], DEPRECATED_FLAGS.get(out[0], {})
    used: list[tuple[str, str]] = []
    for i in range(1, len(out)):
        if out[i] == "--":
            break
        new_token, old = _rewrite(out[i], table)
        if old is not None:
            out[i] = new_token
            if (old, table[old]) not in used:
                used.append((old, table[old]))
    if command in VALUE_REWRITES:
        out, extra = VALUE_REWRITES[command](out)
        used += [u for u in extra if u not in used]
    if used and not {"-q", "--quiet"}.intersection(out):
        for old, new in used:
            print(warning_line(command, old, new), file=stream or sys.stderr)
    return out


# ---- rewrites that depend on the value (one hook per command, kept apart from the table) ----------


def _lasenn_k_list(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """lasenn: ``-k 1,2,3`` (a comma list, the old sweep spelling) becomes ``--k-sweep 1,2,3 -k MAIN``.

    MAIN is the k whose predictions the old command kept: 3 (the paper's) when listed, else the
    first value, so an old command line gives the same file. ``-k 5`` (one value) is left alone.
    Runs after the table, so ``--k 1,2`` (already ``-k 1,2``) is covered too.
    """
    out: list[str] = []
    used: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out += args[i:]
            break
        value = None
        if tok in ("-k", "--n-neighbors") and i + 1 < len(args) and "," in args[i + 1]:
            flag, value, i = tok, args[i + 1], i + 2
        elif tok.startswith("--n-neighbors=") and "," in tok:
            flag, value, i = "--n-neighbors", tok.partition("=")[2], i + 1
        elif tok.startswith("-k") and not tok.startswith("--") and len(tok) > 2 and "," in tok:
            flag, value, i = "-k", tok[2:], i + 1
        if value is None:
            out.append(tok)
            i += 1
            continue
        out += ["--k-sweep", value]
        try:
            ks = [int(v) for v in value.split(",") if v.strip()]
            out += ["-k", str(3 if 3 in ks else ks[0])]
        except (ValueError, IndexError):
            pass  # --k-sweep reports the bad list
        used.append((f"{flag} LIST", "--k-sweep LIST"))
    return out, used


#: command -> hook(args) -> (args, [(old, new), ...]): value-aware rewrites applied after the table.
VALUE_REWRITES = {"lasenn": _lasenn_k_list}
