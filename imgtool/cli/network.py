"""`imgtool network ls|inspect|rm`."""

from __future__ import annotations

import json

import click

from imgtool.cli import cli
from imgtool.cli.common import store_of


@cli.group()
def network() -> None:
    """The bridge network of `imgtool run` (imgtool0)."""


def _state(ctx: click.Context) -> dict:
    from imgtool.network import ipam, links, nat

    net = ipam.subnet()
    entries = ipam.Ipam().entries()
    return {
        "name": links.BRIDGE,
        "subnet": str(net),
        "gateway": str(ipam.gateway(net)),
        "present": links.bridge_exists(),
        "containers": [{"address": ip, **owner} for ip, owner in sorted(entries.items())],
        "published": [
            {"chain": c, "handle": h, "container": cm[len("imgtool:") :]}
            for c, h, cm in nat.rules_of()
        ],
    }


@network.command(name="ls")
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List networks."""
    s = _state(ctx)
    click.echo("NAME      SUBNET          GATEWAY     CONTAINERS  PRESENT")
    click.echo(
        f"{s['name']:<9} {s['subnet']:<15} {s['gateway']:<11} "
        f"{len(s['containers']):<11} {'yes' if s['present'] else 'no'}"
    )
    click.echo("none      -               -           -           yes")
    click.echo("host      -               -           -           yes")


@network.command()
@click.argument("name", default="imgtool0")
@click.pass_context
def inspect(ctx: click.Context, name: str) -> None:
    """Show a network as JSON: subnet, gateway, containers, published-port rules."""
    from imgtool.network import links

    if name != links.BRIDGE:
        raise click.UsageError(f"no network {name!r} (there is {links.BRIDGE})")
    click.echo(json.dumps(_state(ctx), indent=2))


@network.command(name="rm")
@click.argument("name", default="imgtool0")
@click.pass_context
def rm(ctx: click.Context, name: str) -> None:
    """Remove the bridge and imgtool's NAT table (no container may be using them)."""
    from imgtool.containers import Containers
    from imgtool.errors import ImgtoolError
    from imgtool.network import links, nat

    if name != links.BRIDGE:
        raise click.UsageError(f"no network {name!r} (there is {links.BRIDGE})")
    containers = Containers(store_of(ctx).root)
    containers.reap_stale()
    using = [
        r.name for r in containers.list() if containers.is_running(r) and r.extra.get("address")
    ]
    if using:
        raise ImgtoolError(f"network {name} is in use by {', '.join(using)}")
    nat.remove_table()
    links.remove_bridge()
    click.echo(name)
