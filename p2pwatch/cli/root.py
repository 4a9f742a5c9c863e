"""The root ``p2pwatch`` group and its global options (docs/CLI.md). The package ``__init__`` names the
command groups that live in the sibling modules; a command's module is imported only when that command runs
(or ``--help`` lists them all), so ``p2pwatch dht peers`` does not pay for SQLAlchemy, numpy or ffmpeg
bindings at start-up (issue 12: start-up was over half of a 2 s lookup)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import click

from p2pwatch import __version__


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "p2pwatch"


class LazyGroup(click.Group):
    """A group whose commands are ``name -> (module, attribute)``, imported on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, tuple[str, str]] = {}

    def add_lazy(self, name: str, module: str, attribute: str) -> None:
        self.lazy[name] = (module, attribute)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="p2pwatch")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="P2PWATCH_HOME",
              default=None, help="data directory (database, keys, state)")
@click.option("--db", "db_url", envvar="P2PWATCH_DB", default=None, help="SQLAlchemy database URL")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="P2PWATCH_CONFIG", default=None, help="TOML configuration file")
@click.option("--lang", "language", default=None, metavar="ko|en",
              help="language of messages and tables (default: P2PWATCH_LANG, then LC_ALL/LC_MESSAGES/LANG)")
@click.pass_context
def main(ctx: click.Context, home: Path | None, db_url: str | None, config_file: Path | None,
         language: str | None) -> None:
    """p2pwatch: find, prove and record BitTorrent copies of registered content."""
    from p2pwatch.errors import ConfigError
    from p2pwatch.locale import pick_language, set_language

    try:
        set_language(pick_language(language))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--lang") from None
    ctx.ensure_object(dict)
    ctx.obj["language"] = language
    ctx.obj["home"] = home or default_home()
    ctx.obj["db_url"] = db_url
    ctx.obj["config_file"] = config_file
