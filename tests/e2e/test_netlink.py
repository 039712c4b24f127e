"""imgtool's own rtnetlink client, checked against iproute2's `ip` (an independent reader of
the same kernel state): namespaces, veth pairs, addresses and routes it makes are what `ip`
sees, and the kernel's refusals come back as errors naming the request."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest

from imgtool.network import netlink
from imgtool.network.netlink import Netlink, NetlinkError
from tests.conftest import veths_left

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and links need root"),
    pytest.mark.skipif(not shutil.which("ip"), reason="iproute2 (ip) is not installed"),
]


def ip_json(*args: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


@pytest.fixture
def netns() -> str:
    name = f"imgtool-test-nl{os.getpid()}"
    path = netlink.create_netns(name)
    yield path
    netlink.delete_netns(name)


def test_namespace_veth_address_and_route_as_ip_sees_them(netns: str) -> None:
    name = os.path.basename(netns)
    home = os.stat("/proc/thread-self/ns/net").st_ino
    assert name in [n["name"] for n in ip_json("netns", "list")]
    host = f"imgtn{os.getpid() % 100000}"
    fd = os.open(netns, os.O_RDONLY)
    try:
        with Netlink() as nl:
            nl.add_veth(host, "eth0", peer_netns_fd=fd)
            idx = nl.link_index(host)
            assert idx == ip_json("link", "show", host)[0]["ifindex"]
            nl.set_link(idx, up=True)
            with pytest.raises(NetlinkError) as e:
                nl.add_veth(host, "eth1")
            assert e.value.errno == errno.EEXIST
            assert f"RTM_NEWLINK add veth {host}: File exists" in str(e.value)
            assert nl.link_index("imgtool-nope") is None
    finally:
        os.close(fd)
    with Netlink(netns=netns) as ns:
        eth0 = ns.link_index("eth0")
        assert eth0 == ip_json("-n", name, "link", "show", "eth0")[0]["ifindex"]
        ns.add_address(eth0, "10.251.0.2", 24)
        ns.set_link(eth0, up=True)
        ns.set_link(ns.link_index("lo"), up=True)
        ns.add_default_route("10.251.0.1")
        assert ns.addresses(eth0) == ["10.251.0.2"]
        assert set(ns.routes()) == {("0.0.0.0", 0, eth0), ("10.251.0.0", 24, eth0)}
    (link,) = ip_json("-n", name, "addr", "show", "eth0")
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"] == [
        ("10.251.0.2", 24)
    ]
    assert "UP" in link["flags"]
    routes = ip_json("-n", name, "route")
    assert {"dst": "default", "gateway": "10.251.0.1", "dev": "eth0"}.items() <= routes[0].items()
    assert "UP" in ip_json("-n", name, "link", "show", "lo")[0]["flags"]
    # this thread went into the namespace to make a socket there, and came back
    assert os.stat("/proc/thread-self/ns/net").st_ino == home
    assert ip_json("link", "show", host)
    assert netlink.delete_netns(name)  # the veth pair goes with the namespace
    assert veths_left(host) == []
    assert not netlink.delete_netns(name)


def _in_netns(path: str, fn):
    with netlink._back_home():
        from imgtool.sandbox import linux

        linux.setns(path, linux.CLONE_NEWNET)
        return fn()


def test_nft_table_lookup_agrees_with_nft(netns: str) -> None:
    """`run` asks nfnetlink whether imgtool's table exists instead of starting `nft list`: the
    answer must be nft's, for the namespace it is asked in (tables are per namespace)."""
    from tests.support.tools import require_tool

    nft = require_tool("nft", "nftables")
    name = os.path.basename(netns)

    def exists(table: str) -> bool:
        return _in_netns(netns, lambda: netlink.nft_table_exists(netlink.NFPROTO_IPV4, table))

    assert not exists("imgtool")
    subprocess.run(["ip", "netns", "exec", name, nft, "add", "table", "ip", "imgtool"], check=True)
    assert exists("imgtool")
    assert not exists("imgtool2")
    assert not _in_netns(netns, lambda: netlink.nft_table_exists(10, "imgtool"))  # inet: another
    subprocess.run(
        ["ip", "netns", "exec", name, nft, "delete", "table", "ip", "imgtool"], check=True
    )
    assert not exists("imgtool")
