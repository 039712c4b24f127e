"""Addresses on the bridge's subnet: allocated under a lock, recorded per container, freed when
the container ends (and reclaimed from containers that are gone)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from imgtool.atomic import atomic_write, flocked
from imgtool.errors import NetworkError as NetworkError  # raised here; errors.py owns it
from imgtool.network import links

DEFAULT_SUBNET = "10.89.0.0/24"


def subnet() -> ipaddress.IPv4Network:
    text = os.environ.get("IMGTOOL_SUBNET", DEFAULT_SUBNET)
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as e:
        raise NetworkError(f"invalid IMGTOOL_SUBNET {text!r}: {e}") from None
    if net.num_addresses < 8:
        raise NetworkError(f"subnet {net} is too small")
    return net


def gateway(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return net.network_address + 1


STATE_DIR = Path(os.environ.get("IMGTOOL_NETWORK_STATE", "/run/imgtool/network"))


class Ipam:
    """One record for the host: the bridge is the host's, whichever store a container is in."""

    def __init__(self) -> None:
        self.dir = STATE_DIR
        self.path = self.dir / "ipam.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, str]]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with flocked(self.dir / "ipam.lock"):
            try:
                state = json.loads(self.path.read_text())
            except (OSError, ValueError):
                state = {}
            yield state
            atomic_write(self.path, json.dumps(state, indent=1).encode(), durable=False)

    def allocate(
        self, cid: str, name: str, hostname: str = "", hosts: str = ""
    ) -> ipaddress.IPv4Address:
        """An address for the container, handed out round-robin (an address just freed is
        taken last: other hosts' ARP caches still point it at the old container). With
        `hosts` (the container's /etc/hosts on the host), the names of the containers on the
        bridge go into it, and its own name into theirs."""
        net = subnet()
        with self._locked() as state:
            for ip, owner in list(state.items()):
                if not links.in_use(owner.get("id", "")):
                    _withdraw(state, ip)  # a container that is gone keeps no address
            gw = gateway(net)
            candidates = [h for h in net.hosts() if h != gw]
            last = self._last()
            start = next((i + 1 for i, h in enumerate(candidates) if str(h) == last), 0)
            for host in candidates[start:] + candidates[:start]:
                if str(host) in state:
                    continue
                since = f"{time.time():.3f}"  # the record holds strings only
                state[str(host)] = {"id": cid, "name": name, "since": since, "hosts": hosts}
                (self.dir / "last").write_text(str(host))
                if hosts:
                    _announce(state, str(host), hostname)
                return host
        raise NetworkError(f"no free address left in {net}")

    def _last(self) -> str:
        try:
            return (self.dir / "last").read_text().strip()
        except OSError:
            return ""

    def free(self, cid: str) -> None:
        with self._locked() as state:
            for ip in [ip for ip, o in state.items() if o.get("id") == cid]:
                _withdraw(state, ip)

    def entries(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}


# /etc/hosts of the containers on the bridge: files on the host, bind-mounted into each
# container, so they are edited in place (a new inode would not be seen inside).


def _announce(state: dict[str, dict[str, str]], ip: str, hostname: str) -> None:
    """Write the new container's hosts lines, and add its name to everyone else's."""
    me = state[ip]
    own = f"{ip}\t{hostname} {me['name']}\n" if hostname else f"{ip}\t{me['name']}\n"
    others = [(o_ip, o) for o_ip, o in state.items() if o_ip != ip]
    with contextlib.suppress(OSError), open(me["hosts"], "a") as f:
        f.write(own + "".join(f"{o_ip}\t{o['name']}\n" for o_ip, o in others))
    for _, o in others:
        if o.get("hosts"):
            with contextlib.suppress(OSError), open(o["hosts"], "a") as f:
                f.write(f"{ip}\t{me['name']}\n")


def _withdraw(state: dict[str, dict[str, str]], ip: str) -> None:
    """Forget an address, and take its name out of the others' hosts files: the address will
    be someone else's."""
    gone = state.pop(ip)
    line = f"{ip}\t{gone.get('name', '')}"
    for o in state.values():
        if o.get("hosts"):
            with contextlib.suppress(OSError), open(o["hosts"], "r+") as f:
                kept = [x for x in f.read().splitlines(keepends=True) if x.rstrip("\n") != line]
                f.seek(0)
                f.write("".join(kept))
                f.truncate()
