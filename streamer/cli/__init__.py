"""The ``facestream`` command line: the live commands, the model and data commands, the tools."""
from __future__ import annotations

import click

from facestream.streamer.cli import live, models, tools


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facestream")
def main() -> None:
    """facestream: Facemap's mouse-face tracker and neural encoder, live."""


for command in (*live.COMMANDS, *models.COMMANDS, *tools.COMMANDS):
    main.add_command(command)
