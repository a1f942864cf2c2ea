"""Small shared helpers: random generators, devices, list parsing.

Core functions take ``random_state`` (int, None or Generator) and never touch global RNG state;
only the CLI calls :func:`seed_everything`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from knntools.errors import InputError


def as_generator(random_state: Any = None) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from an int seed, ``None`` (fresh entropy) or a Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (CLI only; deterministic training runs)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    import torch

    torch.manual_seed(seed)


def resolve_device(spec: str = "auto") -> Any:
    """Turn ``auto | cpu | cuda | cuda:N | mps`` into a ``torch.device``.

    Raises
    ------
    InputError
        Unknown spec, or CUDA requested where no GPU is available.
    """
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {spec}: no CUDA GPU is available on this machine; expected device 'cpu' or 'auto'", param="device")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {spec}: only {torch.cuda.device_count()} CUDA device(s) present", param="device")
        return dev
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device mps: MPS is not available on this machine", param="device")
        return torch.device("mps")
    raise InputError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N", param="device")


def _parse_list(text: str, option: str, cast: Callable[[str], Any], what: str, example: str) -> list[Any]:
    """Comma-separated values of ``text`` through ``cast``; InputError naming ``option`` on bad input."""
    try:
        vals = [cast(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated {what}s, e.g. {example}") from None
    if not vals:
        raise InputError(f"{option}: expected at least one {what}")
    return vals


def parse_int_list(text: str, option: str) -> list[int]:
    """Parse ``"1,11,51"`` into ints. Raises InputError naming ``option`` on bad input."""
    return _parse_list(text, option, int, "integer", "1,11,51")


def parse_float_list(text: str, option: str) -> list[float]:
    """Parse ``"0,0.5,0.88"`` into floats. Raises InputError naming ``option`` on bad input."""
    return _parse_list(text, option, float, "number", "0.5,0.88")


def parse_range(text: str, option: str) -> tuple[int, int]:
    """Parse ``"1:101"`` into an inclusive ``(low, high)`` integer range."""
    try:
        lo, hi = (int(t) for t in str(text).split(":"))
    except ValueError:
        raise InputError(f"{option} {text!r}: expected LOW:HIGH integers, e.g. 1:101") from None
    if lo > hi:
        raise InputError(f"{option} {text!r}: LOW must be <= HIGH")
    return lo, hi


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of float logits ``[..., C]`` → probabilities (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def check_in_unit_interval(value: float, option: str) -> float:
    """Raise InputError unless ``0 <= value <= 1``."""
    if not (0.0 <= float(value) <= 1.0):
        raise InputError(f"{option} {value}: expected a value in [0, 1]")
    return float(value)


def join(items: Sequence[Any]) -> str:
    """Comma-join for messages."""
    return ", ".join(str(i) for i in items)


def utc_now() -> str:
    """Current UTC time as ISO-8601 with a ``Z`` suffix, second resolution (e.g. ``2026-11-21T20:30:00Z``).

    Written as the ``created`` attribute of files, checkpoints and index headers.
    """
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
