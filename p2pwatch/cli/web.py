"""``p2pwatch web [--bind IP:PORT]``: the investigators' web app (docs/CLI.md, issue 14)."""

from __future__ import annotations

from typing import Any

import click

from p2pwatch.cli.options import handle_errors, parse_host_port
from p2pwatch.config import load_config


@click.command("web")
@click.option("--bind", default=None, metavar="IP:PORT",
              help="address to listen on (default: web.bind, 127.0.0.1:8080); put TLS in a reverse proxy")
@click.option("--insecure-cookies", is_flag=True,
              help="send cookies without the Secure flag (plain-http loopback tests only; same as "
                   "web.secure_cookies = false)")
@click.pass_obj
@handle_errors
def web(obj: dict[str, Any], bind: str | None, insecure_cookies: bool) -> None:
    """Serve the web app until SIGTERM or SIGINT."""
    from p2pwatch.web.server import serve

    overrides = {"web.secure_cookies": False if insecure_cookies else None}
    config = load_config(obj.get("config_file"), overrides=overrides)
    host, port = parse_host_port(bind or config.web.bind, default_port=8080, what="--bind")
    host = host.strip("[]")

    def ready(url: str) -> None:
        click.echo(f"p2pwatch web: serving on {url} (stop with SIGTERM or Ctrl-C)", err=True)

    serve(obj, config, host, port, on_ready=ready)
    click.echo("p2pwatch web: stopped", err=True)
