"""Netlink, through pyroute2: the bridge, a container's veth pair and its network namespace.

The namespace is a named one (`/var/run/netns/imgtool-<id>`), made and configured before the
container starts (eth0 with its address, lo up, the bridge as default gateway); the container
joins it with setns(2) instead of making an empty one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator

from imgtool.atomic import flocked
from imgtool.network.ipam import NetworkError
from imgtool.sandbox import liveness

BRIDGE = "imgtool0"
NETNS_DIR = "/var/run/netns"


def netns_name(cid: str) -> str:
    return f"imgtool-{cid[:12]}"


def netns_path(cid: str) -> str:
    return os.path.join(NETNS_DIR, netns_name(cid))


def _host_veth(cid: str) -> str:
    return f"imgv{cid[:11]}"


@contextlib.contextmanager
def setup_lock() -> Iterator[None]:
    os.makedirs("/run/lock", exist_ok=True)
    with flocked("/run/lock/imgtool-network.lock"):
        yield


def ensure_bridge(net: ipaddress.IPv4Network, gw: ipaddress.IPv4Address) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ip:
        found = ip.link_lookup(ifname=BRIDGE)
        if not found:
            try:
                ip.link("add", ifname=BRIDGE, kind="bridge")
            except NetlinkError as e:
                raise NetworkError(
                    f"cannot create bridge {BRIDGE}: {e.args[-1]} "
                    "(does this kernel have bridge support?)"
                ) from None
            found = ip.link_lookup(ifname=BRIDGE)
        idx = found[0]
        addrs = {a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=idx)}
        if str(gw) not in addrs:
            _check_overlap(ip, net, idx)
            ip.addr("add", index=idx, address=str(gw), prefixlen=net.prefixlen)
        ip.link("set", index=idx, state="up")
    with open(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet", "w") as f:
        f.write("1")  # 127.0.0.1:port -> container: DNAT'd packets keep a loopback source
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")


def _check_overlap(ip: object, net: ipaddress.IPv4Network, bridge: int) -> None:
    for r in ip.get_routes(family=2):  # type: ignore[attr-defined]
        dst = r.get_attr("RTA_DST")
        if not dst or r.get_attr("RTA_OIF") == bridge:
            continue
        other = ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False)
        if other.prefixlen > 0 and other.overlaps(net):
            raise NetworkError(
                f"subnet {net} overlaps the host route {other}: choose another with IMGTOOL_SUBNET"
            )


def create(
    cid: str, address: ipaddress.IPv4Address, net: ipaddress.IPv4Network, gw: ipaddress.IPv4Address
) -> str:
    """Make the container's namespace with eth0 on the bridge; returns the namespace path."""
    from pyroute2 import IPRoute, NetNS, netns

    name = netns_name(cid)
    host, peer = _host_veth(cid), f"imgp{cid[:11]}"
    netns.create(name)
    try:
        with IPRoute() as ip:
            ip.link("add", ifname=host, kind="veth", peer={"ifname": peer})
            h = ip.link_lookup(ifname=host)[0]
            p = ip.link_lookup(ifname=peer)[0]
            b = ip.link_lookup(ifname=BRIDGE)[0]
            ip.link("set", index=h, master=b, state="up")
            ip.link("set", index=p, net_ns_fd=name)
        with NetNS(name) as ns:
            p = ns.link_lookup(ifname=peer)[0]
            ns.link("set", index=p, ifname="eth0")
            ns.addr("add", index=p, address=str(address), prefixlen=net.prefixlen)
            ns.link("set", index=p, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.route("add", dst="default", gateway=str(gw))
    except Exception:
        remove(cid)
        raise
    return netns_path(cid)


def remove(cid: str) -> None:
    """Delete what `create` made; safe to call twice, or for a container long gone."""
    from pyroute2 import IPRoute, netns

    with IPRoute() as ip:
        for idx in ip.link_lookup(ifname=_host_veth(cid)):
            with contextlib.suppress(Exception):
                ip.link("del", index=idx)
    with contextlib.suppress(Exception):
        netns.remove(netns_name(cid))


def in_use(cid: str) -> bool:
    """Whether a container still owns this namespace: its imgtool holds the lock, or a process
    is in it. Namespaces are the host's, shared by every store: liveness cannot come from one
    store's records."""
    if liveness.held(cid):
        return True
    try:
        st = os.stat(netns_path(cid))
    except OSError:
        return False
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                ns = os.stat(f"/proc/{pid}/ns/net")
                if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
                    return True
    return False


def stale() -> list[str]:
    """Container ids (12 hex) of imgtool namespaces no container uses any more."""
    if not os.path.isdir(NETNS_DIR):
        return []
    names = [
        n[len("imgtool-") :]
        for n in os.listdir(NETNS_DIR)
        if n.startswith("imgtool-") and not n.startswith("imgtool-test")
    ]
    return [short for short in names if not in_use(short)]


def bridge_exists() -> bool:
    return os.path.exists(f"/sys/class/net/{BRIDGE}")


def remove_bridge() -> bool:
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        found = ip.link_lookup(ifname=BRIDGE)
        for idx in found:
            ip.link("del", index=idx)
    return bool(found)
