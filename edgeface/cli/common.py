"""Helpers shared by the CLI modules: one-line errors, tables."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence, TypeVar

import typer

from edgeface.core.errors import EdgefaceError
from edgeface.daemon.secrets import redact

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


def friendly_errors(fn: F) -> F:
    """Turn an EdgefaceError into ``error: <one line>`` on stderr and its exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgefaceError as exc:
            typer.echo(f"error: {redact(str(exc))}", err=True)  # a URL's password never reaches the screen
            raise typer.Exit(exc.exit_code) from None
        except MemoryError:  # inputs are bounded; this is what is left (a machine smaller than the input)
            typer.echo("error: out of memory: the input is too large for this machine's memory", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except ValueError as exc:
            if "embedded null byte" not in str(exc):
                raise
            typer.echo("error: a path contains a NUL byte", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def refuse_secret_in_argument(option: str, value: str | None, config_key: str) -> None:
    """Refuse a URL holding a password or token on the command line: every local user reads command lines
    (``ps``, /proc). The error shows it redacted and says where the secret goes instead."""
    from edgeface.core.errors import ConfigError
    from edgeface.daemon.secrets import holds_secret

    if value is not None and holds_secret(value):
        raise ConfigError(f"{option} {redact(value)}: a password or token on the command line is visible to "
                          f"every user of this machine (ps); put {config_key} = \"...\" in a config file only "
                          "you can read, and pass it with --config")


def field_default(config: type, name: str) -> Any:
    """The default of a config dataclass's field, so that an option states it nowhere else."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in rows) and rows for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def echo_err(message: str) -> None:
    typer.echo(message, err=True)

