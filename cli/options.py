"""Options shared by every tipcshm command."""

from __future__ import annotations

import click

from tipcshm.shm.layout import NODE_ENV, resolve_node_name

node_option = click.option(
    "--name",
    "name",
    default=None,
    help=f"Node name (default: ${NODE_ENV} or 'default').",
)


def node_from_option(name: str | None) -> str:
    """The node a command works on, or a usage error naming --name."""
    try:
        return resolve_node_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
