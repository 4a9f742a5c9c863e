"""``p2pwatch user add|list|disable``: web accounts (docs/CLI.md, issue 14)."""

from __future__ import annotations

import sys
from typing import Any

import click

from p2pwatch.cli.options import emit_json, handle_errors
from p2pwatch.cli.session import cli_session
from p2pwatch.errors import ConfigError
from p2pwatch.locale import tr as _
from p2pwatch.storage.models import ROLES


@click.group("user")
def user() -> None:
    """Web accounts: add, list, disable."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of standard input")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def user_add(obj: dict[str, Any], name: str, role: str, password_stdin: bool, as_json: bool) -> None:
    """Add an account (the password never goes on the command line)."""
    from p2pwatch.web.accounts import add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        raise ConfigError(_("give the password on standard input with --password-stdin"))
    with cli_session(obj) as session:
        created = add_user(session, name, role, password)
        doc = {"user": created.name, "role": created.role, "created_at": created.created_at.isoformat()}
    if as_json:
        emit_json(doc)
    else:
        click.echo(_("account %(user)s (%(role)s) added", user=repr(name), role=_(role)))


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def user_list(obj: dict[str, Any], as_json: bool) -> None:
    """Accounts, their role, whether disabled, and their last sign-in."""
    from rich.console import Console
    from rich.table import Table

    from p2pwatch.web.accounts import list_users

    with cli_session(obj) as session:
        rows = list_users(session)
    if as_json:
        emit_json(rows)
        return
    table = Table(title=_("accounts"))
    for column in (_("user"), _("role"), _("created"), _("disabled"), _("last sign-in")):
        table.add_column(column)
    for r in rows:
        table.add_row(r["user"], r["role"], r["created_at"][:19], (r["disabled_at"] or "")[:19],
                      (r["last_signin_at"] or "")[:19])
    Console().print(table)


@user.command("disable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def user_disable(obj: dict[str, Any], name: str, as_json: bool) -> None:
    """Disable an account: it can no longer sign in and its open sessions end (it is kept for the audit log)."""
    from p2pwatch.web.accounts import disable_user

    with cli_session(obj) as session:
        disabled = disable_user(session, name)
        doc = {"user": disabled.name, "disabled_at": disabled.disabled_at.isoformat() if disabled.disabled_at else None}
    if as_json:
        emit_json(doc)
    else:
        click.echo(_("account %(user)s disabled", user=repr(name)))
