"""The root ``p2pwatch`` group and its global options (docs/CLI.md). The package ``__init__`` attaches the
command groups that live in the sibling modules."""

from __future__ import annotations

import os
from pathlib import Path

import click

from p2pwatch import __version__


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "p2pwatch"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="p2pwatch")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="P2PWATCH_HOME",
              default=None, help="data directory (database, keys, state)")
@click.option("--db", "db_url", envvar="P2PWATCH_DB", default=None, help="SQLAlchemy database URL")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="P2PWATCH_CONFIG", default=None, help="TOML configuration file")
@click.pass_context
def main(ctx: click.Context, home: Path | None, db_url: str | None, config_file: Path | None) -> None:
    """p2pwatch: find, prove and record BitTorrent copies of registered content."""
    ctx.ensure_object(dict)
    ctx.obj["home"] = home or default_home()
    ctx.obj["db_url"] = db_url
    ctx.obj["config_file"] = config_file
