"""rtnetlink (NETLINK_ROUTE) over a raw socket: the few link, address and route requests that
the bridge network needs, and named network namespaces as `ip netns` makes them.

Hand-written rather than pyroute2: importing pyroute2 costs about 100 ms (its package imports
asyncio, ssl and every netlink family), which was half of a default `imgtool run`; the messages
below are the stable kernel ABI of <linux/rtnetlink.h> and <linux/if_link.h>.
"""

from __future__ import annotations

import _socket  # the C module: the `socket` wrapper costs a bridged run ~5 ms to import
import contextlib
import errno
import ipaddress
import os
import struct
from collections.abc import Iterator

from imgtool.errors import NetworkError, SandboxError
from imgtool.sandbox import linux

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
# nf_tables over nfnetlink (<linux/netfilter/nf_tables.h>): the one question run asks of it
NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE, NFTA_TABLE_NAME = 10, 1, 1
NFPROTO_IPV4 = 2
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
IFF_UP = 0x1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, proto…

NAMES = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_GETLINK: "RTM_GETLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_GETADDR: "RTM_GETADDR",
    RTM_NEWROUTE: "RTM_NEWROUTE",
    RTM_GETROUTE: "RTM_GETROUTE",
}


class NetlinkError(NetworkError):
    """A request the kernel refused: names the message and what it was about."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes | str | int) -> bytes:
    """One rtattr; strings get their NUL, ints are u32, bytes are taken as they are."""
    if isinstance(value, str):
        value = value.encode() + b"\0"
    elif isinstance(value, int):
        value = struct.pack("=I", value)
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        out.setdefault(kind & 0x3FFF, data[pos + 4 : pos + length])  # without NLA_F_ flags
        pos += _align(length)
    return out


def _ipv4(addr: bytes) -> str:
    return str(ipaddress.IPv4Address(addr))


class Netlink:
    """One NETLINK_ROUTE socket, in this thread's network namespace or in the one at `netns`
    (a socket stays in the namespace it was made in: we enter it only to make the socket)."""

    def __init__(self, netns: str | None = None, protocol: int = NETLINK_ROUTE) -> None:
        self.seq = 0
        if netns is None:
            self.sock = self._socket(protocol)
            return
        with _back_home():
            linux.setns(netns, linux.CLONE_NEWNET)
            self.sock = self._socket(protocol)

    @staticmethod
    def _socket(protocol: int) -> _socket.socket:
        s = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, protocol)
        s.bind((0, 0))
        return s

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one message; return the (type, payload) answers: none for an acknowledged
        change, every part of a dump. A refusal raises NetlinkError naming `what`."""
        self.seq += 1
        flags |= NLM_F_REQUEST | (0 if flags & NLM_F_DUMP == NLM_F_DUMP else NLM_F_ACK)
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, flags, self.seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            for mtype, seq, payload in _messages(data):
                if seq != self.seq:
                    continue  # an answer to an earlier request we gave up on
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(
                            code, f"netlink {NAMES.get(kind, kind)} {what}: {os.strerror(code)}"
                        )
                    return out  # the acknowledgement
                out.append((mtype, payload))

    # links

    def link_index(self, name: str) -> int | None:
        body = _IFINFO.pack(_socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, name)
        try:
            answers = self.request(RTM_GETLINK, 0, body, f"link {name}")
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return _IFINFO.unpack_from(answers[0][1])[2] if answers else None

    def add_link(self, name: str, kind: str, info_data: bytes = b"") -> None:
        info = attr(IFLA_INFO_KIND, kind) + (attr(IFLA_INFO_DATA, info_data) if info_data else b"")
        body = _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, name) + attr(IFLA_LINKINFO, info)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add {kind} {name}")

    def add_veth(self, name: str, peer: str, peer_netns_fd: int | None = None) -> None:
        """A veth pair; with `peer_netns_fd` the peer is made straight in that namespace."""
        peer_attrs = attr(IFLA_IFNAME, peer)
        if peer_netns_fd is not None:
            peer_attrs += attr(IFLA_NET_NS_FD, peer_netns_fd)
        peer_info = _IFINFO.pack(0, 0, 0, 0, 0) + peer_attrs
        self.add_link(name, "veth", attr(VETH_INFO_PEER, peer_info))

    def set_link(
        self, index: int, up: bool | None = None, master: int | None = None, name: str = ""
    ) -> None:
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        body = _IFINFO.pack(0, 0, index, flags, change)
        if master is not None:
            body += attr(IFLA_MASTER, master)
        if name:
            body += attr(IFLA_IFNAME, name)
        self.request(RTM_NEWLINK, 0, body, f"set link {index}")

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, 0, _IFINFO.pack(0, 0, index, 0, 0), f"delete link {index}")

    # addresses and routes

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        raw = ipaddress.IPv4Address(address).packed
        body = _IFADDR.pack(_socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add {address}/{prefixlen}")

    def addresses(self, index: int) -> list[str]:
        """The IPv4 addresses of one link."""
        body = _IFADDR.pack(_socket.AF_INET, 0, 0, 0, 0)
        out = []
        for _, payload in self.request(RTM_GETADDR, NLM_F_DUMP, body, "dump addresses"):
            if _IFADDR.unpack_from(payload)[4] == index:
                attrs = parse_attrs(payload[_IFADDR.size :])
                raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
                if raw:
                    out.append(_ipv4(raw))
        return out

    def add_default_route(self, gateway: str) -> None:
        body = _RTMSG.pack(
            _socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
        )
        body += attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
        self.request(
            RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add default route via {gateway}"
        )

    def routes(self) -> Iterator[tuple[str, int, int]]:
        """IPv4 routes of the main table: (destination, prefix length, output link index)."""
        body = _RTMSG.pack(_socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        for _, payload in self.request(RTM_GETROUTE, NLM_F_DUMP, body, "dump routes"):
            dst_len, table = _RTMSG.unpack_from(payload)[1], _RTMSG.unpack_from(payload)[4]
            if table != RT_TABLE_MAIN:
                continue
            attrs = parse_attrs(payload[_RTMSG.size :])
            dst = _ipv4(attrs[RTA_DST]) if RTA_DST in attrs else "0.0.0.0"
            oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
            yield dst, dst_len, oif


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    while pos + _HDR.size <= len(data):
        length, mtype, _, seq, _ = _HDR.unpack_from(data, pos)
        if length < _HDR.size:
            break
        yield mtype, seq, data[pos + _HDR.size : pos + length]
        pos += _align(length)


# named network namespaces, as `ip netns add|delete` keeps them

NETNS_DIR = "/var/run/netns"


def _shared_netns_dir() -> None:
    """/var/run/netns as a shared mount point (what `ip netns` does): a namespace's bind mount,
    and its removal, then reach every mount namespace made since."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    try:
        linux.mount("", NETNS_DIR, "", linux.MS_SHARED | linux.MS_REC)
    except SandboxError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        linux.mount(NETNS_DIR, NETNS_DIR, "", linux.MS_BIND | linux.MS_REC)
        linux.mount("", NETNS_DIR, "", linux.MS_SHARED | linux.MS_REC)


def create_netns(name: str) -> str:
    """A new, empty network namespace kept alive by a bind mount at /var/run/netns/<name>."""
    _shared_netns_dir()
    path = os.path.join(NETNS_DIR, name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    try:
        with _back_home():
            linux.unshare(linux.CLONE_NEWNET)  # this thread only, and only for the block
            linux.mount("/proc/thread-self/ns/net", path, "", linux.MS_BIND)
    except SandboxError:
        os.unlink(path)
        raise
    return path


@contextlib.contextmanager
def _back_home() -> Iterator[None]:
    """Whatever network namespace the block enters, this thread ends it in the one it had."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield
    finally:
        try:
            linux.setns_fd(home, linux.CLONE_NEWNET)
        finally:
            os.close(home)


def delete_netns(name: str) -> bool:
    """Drop the name (and so, once nothing else is in it, the namespace). Returns whether a
    namespace was mounted there."""
    path = os.path.join(NETNS_DIR, name)
    mounted = True
    try:
        linux.umount(path, linux.MNT_DETACH)
    except SandboxError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise
        mounted = False
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return mounted


def nft_table_exists(family: int, name: str) -> bool:
    """Whether nftables has the table `name` of `family` (NFPROTO_IPV4: `ip`), asked over
    nfnetlink: the `nft list table` it replaces costs a process and its library's start-up on
    every `run`. Raises NetlinkError (or OSError without nfnetlink) when the kernel cannot say."""
    body = struct.pack("=BBH", family, 0, 0) + attr(NFTA_TABLE_NAME, name)  # nfgenmsg, v0
    with Netlink(protocol=NETLINK_NETFILTER) as nl:
        try:
            kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
            return bool(nl.request(kind, 0, body, f"nftables table {name}"))
        except NetlinkError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
