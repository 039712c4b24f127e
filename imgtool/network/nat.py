"""NAT with nftables: outbound masquerade for the bridge's subnet, and DNAT for published ports
(from other hosts, and from this host to 127.0.0.1 or its own addresses). Everything lives in a
table of imgtool's own; a container's rules carry `imgtool:<id>` as their comment."""

from __future__ import annotations

import ipaddress
import json
import os

from imgtool.errors import NetworkError
from imgtool.network import netlink
from imgtool.network.links import BRIDGE
from imgtool.values import Frozen

TABLE = "imgtool"


class Port(Frozen):
    __slots__ = ("host_ip", "host_port", "container_port", "proto")
    host_ip: str  # "" for every address of the host
    host_port: int
    container_port: int
    proto: str

    def __init__(
        self, host_ip: str, host_port: int, container_port: int, proto: str = "tcp"
    ) -> None:
        self._init(host_ip, host_port, container_port, proto)

    def __str__(self) -> str:
        where = f"{self.host_ip}:" if self.host_ip else ""
        return f"{where}{self.host_port}->{self.container_port}/{self.proto}"


def parse_publish(text: str) -> list[Port]:
    """`[ip:]hostport:containerport[/proto]`, ranges as `8000-8002:80-82`, or `containerport`
    alone (a free host port is chosen)."""
    spec, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise NetworkError(f"invalid -p {text!r}: protocol must be tcp or udp")
    parts = spec.rsplit(":", 2)
    host_ip = ""
    if len(parts) == 3:
        host_ip = parts[0].strip("[]")
        parts = parts[1:]
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise NetworkError(f"invalid -p {text!r}: {host_ip!r} is not an IPv4 address") from None
    try:
        ctr = _range(parts[-1])
        host = _range(parts[0]) if len(parts) == 2 and parts[0] else [0] * len(ctr)
    except ValueError:
        raise NetworkError(f"invalid -p {text!r}: expected [ip:]hostport:containerport") from None
    if len(host) != len(ctr):
        raise NetworkError(f"invalid -p {text!r}: the ranges differ in length")
    return [
        Port(host_ip, h or free_port(host_ip, proto), c, proto)
        for h, c in zip(host, ctr, strict=True)
    ]


def _range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    a, b = int(lo), int(hi or lo)
    if not (0 < a <= b < 65536):
        raise ValueError(text)
    return list(range(a, b + 1))


def free_port(host_ip: str, proto: str) -> int:
    import socket  # with -p only

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host_ip or "0.0.0.0", 0))
        return s.getsockname()[1]


def check_free(port: Port) -> None:
    """Refuse a host port that something already listens on, before the container starts."""
    import socket  # with -p only

    kind = socket.SOCK_STREAM if port.proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((port.host_ip or "0.0.0.0", port.host_port))
        except OSError as e:
            raise NetworkError(
                f"port {port.host_port}/{port.proto} on "
                f"{port.host_ip or 'the host'} is already in use "
                f"({e.strerror})"
            ) from None


def _has_nft() -> bool:
    """nft on PATH (shutil.which's search, without importing shutil: ~4 ms of a bridged run)."""
    return any(
        os.access(path, os.X_OK) and os.path.isfile(path)
        for path in (os.path.join(d, "nft") for d in os.get_exec_path())
    )


def _nft(script: str) -> None:
    if not _has_nft():
        raise NetworkError("nft (nftables) is not installed: bridge networking needs it")
    import subprocess  # only to change the table: a run on a made table never starts nft

    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetworkError(f"nft failed: {r.stderr.strip().splitlines()[-1:]}")


def ensure_table(net: ipaddress.IPv4Network) -> None:
    if _table_exists():
        return
    _nft(f"""
table ip {TABLE} {{
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
  chain output {{ type nat hook output priority -100; policy accept; }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {net} oifname != "{BRIDGE}" masquerade comment "imgtool:bridge"
    ip saddr 127.0.0.0/8 oifname "{BRIDGE}" masquerade comment "imgtool:bridge"
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{BRIDGE}" accept comment "imgtool:bridge"
    oifname "{BRIDGE}" accept comment "imgtool:bridge"
  }}
}}
""")


def _table_exists() -> bool:
    try:
        return netlink.nft_table_exists(netlink.NFPROTO_IPV4, TABLE)
    except (OSError, NetworkError):  # nfnetlink cannot say (a NetlinkError): ask nft
        import subprocess

        r = subprocess.run(["nft", "list", "table", "ip", TABLE], capture_output=True)
        return r.returncode == 0


def publish(cid: str, address: ipaddress.IPv4Address, ports: list[Port]) -> None:
    lines = []
    for p in ports:
        match = f"ip daddr {p.host_ip} " if p.host_ip else "fib daddr type local "
        rule = (
            f"{match}{p.proto} dport {p.host_port} dnat to {address}:{p.container_port} "
            f'comment "imgtool:{cid}"'
        )
        lines.append(f"add rule ip {TABLE} prerouting {rule}")
        lines.append(f"add rule ip {TABLE} output {rule}")
    if lines:
        _nft("\n".join(lines) + "\n")


def rules_of(cid_prefix: str | None = None) -> list[tuple[str, int, str]]:
    """(chain, handle, comment) of imgtool's container rules (of one container, if given)."""
    if not _has_nft() or not _table_exists():
        return []
    import subprocess

    r = subprocess.run(
        ["nft", "-j", "-a", "list", "table", "ip", TABLE], capture_output=True, text=True
    )
    out = []
    for item in json.loads(r.stdout or "{}").get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        comment = rule.get("comment", "")
        if not comment.startswith("imgtool:") or comment == "imgtool:bridge":
            continue
        if cid_prefix is None or comment[len("imgtool:") :].startswith(cid_prefix):
            out.append((rule["chain"], rule["handle"], comment))
    return out


def unpublish(cid: str) -> None:
    lines = [
        f"delete rule ip {TABLE} {chain} handle {handle}" for chain, handle, _ in rules_of(cid[:12])
    ]
    if lines:
        _nft("\n".join(lines) + "\n")


def remove_table() -> None:
    if _has_nft() and _table_exists():
        _nft(f"delete table ip {TABLE}\n")
