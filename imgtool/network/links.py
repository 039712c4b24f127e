"""The bridge, a container's veth pair and its network namespace, made through rtnetlink.

The namespace is a named one (`/var/run/netns/imgtool-<id>`), made and configured before the
container starts (eth0 with its address, lo up, the bridge as default gateway); the container
joins it with setns(2) instead of making an empty one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Iterator

from imgtool.atomic import flocked
from imgtool.errors import NetworkError, SandboxError
from imgtool.network import netlink
from imgtool.network.netlink import Netlink, NetlinkError
from imgtool.sandbox import liveness

BRIDGE = "imgtool0"
NETNS_DIR = netlink.NETNS_DIR


def netns_name(cid: str) -> str:
    return f"imgtool-{cid[:12]}"


_OUR_NETNS = re.compile(r"imgtool-([0-9a-f]{12})")  # what netns_name() makes of a container id


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
    with Netlink() as nl:
        idx = nl.link_index(BRIDGE)
        if idx is None:
            try:
                nl.add_link(BRIDGE, "bridge")
            except NetlinkError as e:
                raise NetworkError(
                    f"cannot create bridge {BRIDGE}: {os.strerror(e.errno)} "
                    "(does this kernel have bridge support?)"
                ) from None
            idx = nl.link_index(BRIDGE)
            assert idx is not None
        if str(gw) not in nl.addresses(idx):
            _check_overlap(nl, net, idx)
            nl.add_address(idx, str(gw), net.prefixlen)
        nl.set_link(idx, up=True)
    with open(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet", "w") as f:
        f.write("1")  # 127.0.0.1:port -> container: DNAT'd packets keep a loopback source
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")


def _check_overlap(nl: Netlink, net: ipaddress.IPv4Network, bridge: int) -> None:
    for dst, dst_len, oif in nl.routes():
        if dst_len == 0 or oif == bridge:
            continue
        other = ipaddress.IPv4Network(f"{dst}/{dst_len}", strict=False)
        if other.overlaps(net):
            raise NetworkError(
                f"subnet {net} overlaps the host route {other}: choose another with IMGTOOL_SUBNET"
            )


def create(
    cid: str, address: ipaddress.IPv4Address, net: ipaddress.IPv4Network, gw: ipaddress.IPv4Address
) -> str:
    """Make the container's namespace with eth0 on the bridge; returns the namespace path."""
    path = netlink.create_netns(netns_name(cid))
    host = _host_veth(cid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with Netlink() as nl:
                bridge = nl.link_index(BRIDGE)
                if bridge is None:
                    raise NetworkError(f"the bridge {BRIDGE} is gone")
                nl.add_veth(host, "eth0", peer_netns_fd=fd)  # the peer is born inside
                idx = nl.link_index(host)
                assert idx is not None
                nl.set_link(idx, master=bridge, up=True)
        finally:
            os.close(fd)
        with Netlink(netns=path) as ns:
            eth0, lo = ns.link_index("eth0"), ns.link_index("lo")
            assert eth0 is not None and lo is not None
            ns.add_address(eth0, str(address), net.prefixlen)
            ns.set_link(eth0, up=True)
            ns.set_link(lo, up=True)
            ns.add_default_route(str(gw))
    except Exception:
        remove(cid)
        raise
    return path


def remove(cid: str) -> None:
    """Delete what `create` made; safe to call twice, or for a container long gone.

    Dropping the namespace is enough: the kernel then destroys it, and a veth pair goes with
    either end's namespace. That happens in the background, where deleting the veth ourselves
    would wait ~15 ms for the kernel to quiesce the device (a sixth of a whole `run --rm`)."""
    with contextlib.suppress(SandboxError, OSError):
        if netlink.delete_netns(netns_name(cid)):
            return
    with contextlib.suppress(NetworkError), Netlink() as nl:  # no namespace: a veth left alone
        idx = nl.link_index(_host_veth(cid))
        if idx is not None:
            nl.delete_link(idx)


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
    """Container ids (12 hex) of imgtool namespaces no container uses any more. Only names of
    the exact form netns_name() makes count: another tool's (or a test's) `imgtool-whatever`
    namespace is not ours to remove."""
    if not os.path.isdir(NETNS_DIR):
        return []
    names = [m.group(1) for n in os.listdir(NETNS_DIR) if (m := _OUR_NETNS.fullmatch(n))]
    return [short for short in names if not in_use(short)]


def bridge_exists() -> bool:
    return os.path.exists(f"/sys/class/net/{BRIDGE}")


def remove_bridge() -> bool:
    with Netlink() as nl:
        idx = nl.link_index(BRIDGE)
        if idx is not None:
            nl.delete_link(idx)
    return idx is not None
