"""Click exception classes and ``get_current_context`` across typer versions (typer >= 0.2x vendors click as ``typer._click``)."""

from __future__ import annotations

try:  # typer with vendored click
    from typer._click.exceptions import ClickException, UsageError  # type: ignore[import-not-found]
    from typer._click.globals import get_current_context  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - typer built on the click package
    from click.exceptions import ClickException, UsageError  # type: ignore[no-redef]
    from click.globals import get_current_context  # type: ignore[no-redef]

__all__ = ["ClickException", "UsageError", "get_current_context"]
