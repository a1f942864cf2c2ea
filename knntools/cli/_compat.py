"""Click exception classes across typer versions (typer >= 0.2x vendors click as ``typer._click``)."""

from __future__ import annotations

try:  # typer with vendored click
    from typer._click.exceptions import ClickException, UsageError  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - typer built on the click package
    from click.exceptions import ClickException, UsageError  # type: ignore[no-redef]

__all__ = ["ClickException", "UsageError"]
