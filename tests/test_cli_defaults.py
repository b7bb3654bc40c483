"""Each default is written once: the CLI's options take theirs from the config dataclasses the library uses."""

from __future__ import annotations

import dataclasses

import click
import pytest
import typer.main

from edgeface.cli import app
from edgeface.cli.common import field_default
from edgeface.convert.options import ConvertOptions
from edgeface.deploy import DeployOptions
from edgeface.train.config import TrainConfig

COMMAND = typer.main.get_command(app)


def options(name: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in COMMAND.commands[name].params if p.name}  # type: ignore[attr-defined]


@pytest.mark.parametrize("command, config", [("train", TrainConfig), ("convert", ConvertOptions),
                                             ("deploy", DeployOptions)])
def test_options_default_to_their_config_field(command: str, config: type) -> None:
    with_default = {f.name for f in dataclasses.fields(config)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    shared = with_default & set(options(command))
    assert len(shared) >= 10, sorted(shared)  # the command really is built on this config
    wrong = {name: (options(command)[name].default, field_default(config, name)) for name in shared
             if options(command)[name].default != field_default(config, name)}
    assert not wrong, f"option default != {config.__name__} default: {wrong}"


def test_run_options_leave_the_defaults_to_the_config_file() -> None:
    """``edgeface run``'s flags override the TOML config only when given: none has a default of its own."""
    given = {name: p.default for name, p in options("run").items() if p.default is not None}
    assert not given, given
