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
from imgtool.errors import ImgtoolError

DEFAULT_SUBNET = "10.89.0.0/24"


class NetworkError(ImgtoolError):
    pass


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

    def allocate(self, cid: str, name: str) -> ipaddress.IPv4Address:
        from imgtool.network import links

        net = subnet()
        with self._locked() as state:
            for ip, owner in list(state.items()):
                if not links.in_use(owner.get("id", "")):
                    del state[ip]  # a container that is gone keeps no address
            for host in net.hosts():
                if host == gateway(net) or str(host) in state:
                    continue
                state[str(host)] = {"id": cid, "name": name, "since": time.time()}
                return host
        raise NetworkError(f"no free address left in {net}")

    def free(self, cid: str) -> None:
        with self._locked() as state:
            for ip in [ip for ip, o in state.items() if o.get("id") == cid]:
                del state[ip]

    def entries(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
