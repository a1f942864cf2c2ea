"""One parser for layer specs, shared by model networks and activation files.

A *layer spec* names the layers a command works on::

    all           every available layer, in network order (the logits too when the source has them)
    hidden        every available layer except the logits
    penultimate   the input of the final classifier layer
    NAME[,NAME]   names (``penultimate``, ``logits``, ``all`` and ``hidden`` may appear among them)

``--layers SPEC`` (several layers) and ``--layer NAME`` (exactly one: ``single=True``) are both
parsed by :func:`resolve_layer_spec`; :meth:`knntools.io.h5.KFile.resolve_layers` (activation
files) and :func:`knntools.models.features.resolve_layers` (networks) call it. No heavy imports.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

from knntools.errors import InputError

#: The keywords of a layer spec (besides layer names).
KEYWORDS = ("all", "hidden", "penultimate")

#: Text of the valid choices, used in every message.
SPEC_CHOICES = "all | hidden | penultimate | NAME[,NAME...]"
SINGLE_CHOICES = "penultimate | logits | NAME"

Penultimate = Union[str, None, Callable[[], str]]


def split_spec(spec: str | Sequence[str]) -> list[str]:
    """The items of a spec: a comma-separated string or a sequence of such strings, blanks dropped."""
    parts = [spec] if isinstance(spec, str) else [str(s) for s in spec]
    return [item.strip() for part in parts for item in part.split(",") if item.strip()]


def unknown_layer(source: str, name: str, available: Sequence[str], *, single: bool = False, hint: str = "") -> InputError:
    """The one-line error for a layer ``name`` that ``source`` does not have."""
    choices = SINGLE_CHOICES if single else SPEC_CHOICES
    return InputError(f"{source}: layer '{name}' not found (available: {', '.join(available) or 'none'}, penultimate); "
                      f"expected {choices}{hint}")


def resolve_layer_spec(
    spec: str | Sequence[str],
    available: Sequence[str],
    *,
    penultimate: Penultimate,
    logits: str | None = "logits",
    source: str,
    single: bool = False,
    extra: Sequence[str] = (),
    hint: str = "",
) -> list[str]:
    """Turn a layer spec into concrete layer names (resolved once, in order, without repeats).

    Parameters
    ----------
    spec : str or sequence of str
        ``all | hidden | penultimate | NAME[,NAME...]`` (see the module docstring); a sequence is a
        list of such items.
    available : sequence of str
        The source's layer names in network order (for a file: its hidden layers then ``logits``
        when stored).
    penultimate : str, None or callable
        Name of the penultimate layer; a callable is only called when the spec asks for it (it may
        raise its own error); None when the source has none.
    logits : str or None, default "logits"
        Name of the logits layer in ``available`` (``hidden`` leaves it out); None when the source
        has no logits layer.
    source : str
        What the layers belong to (a file path, a network architecture), named in every error.
    single : bool, default False
        Require exactly one resolved layer (``--layer NAME``).
    extra : sequence of str
        Further names accepted as they are (e.g. module paths of a network, or a command's own
        documented value such as lasenn's ``paper``); they are not part of ``all``/``hidden``.
    hint : str
        Appended to the "not found" message.

    Returns
    -------
    list of str
        The layer names; ``penultimate`` replaced by the actual name.

    Raises
    ------
    InputError
        One line naming ``source``, the bad value and the valid choices: an unknown layer, an empty
        spec, ``penultimate`` when the source has none, or (``single``) a spec that does not name
        exactly one layer.
    """
    items = split_spec(spec)
    avail = [str(a) for a in available]
    extras = set(extra)
    choices = SINGLE_CHOICES if single else SPEC_CHOICES
    if not items:
        raise InputError(f"{source}: empty layer list; expected {choices} (available: {', '.join(avail) or 'none'})")
    out: list[str] = []
    for item in items:
        if item == "all":
            names = avail
        elif item == "hidden":
            names = [a for a in avail if a != logits]
        elif item == "penultimate":
            pen = penultimate() if callable(penultimate) else penultimate
            if not pen:
                raise InputError(f"{source}: no known penultimate layer; expected one of: {', '.join(avail) or 'none'}")
            names = [pen]
        elif item in avail or item in extras:
            names = [item]
        else:
            raise unknown_layer(source, item, avail, single=single, hint=hint)
        out.extend(n for n in names if n not in out)
    if single and len(out) != 1:
        raise InputError(f"{source}: layer spec '{','.join(items)}' names {len(out)} layers ({', '.join(out) or 'none'}); "
                         f"expected exactly one: {SINGLE_CHOICES}")
    if not out:
        raise InputError(f"{source}: layer spec '{','.join(items)}' names no layer; expected {choices} (available: {', '.join(avail) or 'none'})")
    return out
