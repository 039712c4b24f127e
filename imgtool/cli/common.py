"""Options and helpers shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from imgtool.reference import Reference
    from imgtool.store import Store


def store_of(ctx: click.Context) -> Store:
    """The store, reading names as pull does: a short name follows its registries.conf alias
    in run, inspect, tag, rmi and the rest, as in podman."""
    from imgtool.store import Store

    root = ctx.find_root().obj.get("root")
    return Store(Path(root) if root else None, resolve=_resolve_name)


def _resolve_name(text: str) -> Reference:
    """registries.conf's resolver, imported on first use: `images` and a run by digest or full
    name never need it (a few ms of start-up)."""
    from imgtool.registry.config import resolve_name

    return resolve_name(text)


def registry_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--cert-dir",
        type=click.Path(exists=True, file_okay=False),
        help="CA certificates (*.crt) and client keys instead of certs.d.",
    )(f)
    f = click.option(
        "--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS for this registry."
    )(f)
    return f


def transport(insecure: bool, cert_dir: str | None, **extra: Any) -> Any:
    from imgtool.registry.client import TransportOptions

    return TransportOptions(
        insecure=insecure,
        cert_dir=Path(cert_dir) if cert_dir else None,
        notice=_warn,
        **extra,
    )


def _warn(message: str) -> None:
    click.echo(f"imgtool: warning: {message}", err=True)


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}B"
