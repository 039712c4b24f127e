"""`imgtool login` and `imgtool logout`."""

from __future__ import annotations

import sys

import click

from imgtool.cli import cli, options
from imgtool.cli.common import transport
from imgtool.cli.group import with_options


@cli.command()
@click.argument("registry")
@click.option("--username", "-u", help="User name.")
@click.option("--password", "-p", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_options(options.REGISTRY)
def login(
    registry: str,
    username: str | None,
    password: str | None,
    password_stdin: bool,
    insecure: bool,
    cert_dir: str | None,
) -> None:
    """Check credentials against REGISTRY and store them where docker login would."""
    from imgtool.login import login as do_login

    if password_stdin:
        if password:
            raise click.UsageError("--password and --password-stdin are exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    where = do_login(registry, username, password, transport(insecure, cert_dir))
    click.echo(f"Login Succeeded (credentials stored in {where})")


@cli.command()
@click.argument("registry")
def logout(registry: str) -> None:
    """Forget the credentials of REGISTRY."""
    from imgtool.login import logout as do_logout

    if do_logout(registry):
        click.echo(f"Removed login credentials for {registry}")
    else:
        click.echo(f"Not logged in to {registry}")
