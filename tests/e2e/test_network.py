"""Bridge networking for real: imgtool0, veth pairs, NAT and published ports, on this machine
only (the outbound test talks to a network namespace the test makes)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtool.network import links, nat
from imgtool.store import Store
from tests.conftest import imgtool, spawn, veths_left
from tests.support.registry import Registry, free_port

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="bridges, veths and nftables need root"),
    pytest.mark.skipif(not shutil.which("nft"), reason="nftables (nft) is not installed"),
    pytest.mark.skipif(
        not Path("/proc/sys/net/bridge").exists() and not Path("/sys/module/bridge").exists(),
        reason="the kernel has no bridge support",
    ),
]

HTTPD = "mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture
def busybox(plain_registry: Registry, store: Store) -> Iterator[str]:
    ref = f"{plain_registry.host}/library/busybox:latest"
    assert imgtool("pull", "-q", ref).code == 0
    yield ref
    for r in imgtool("ps", "-a", "-q").out.split():
        imgtool("rm", "-f", r)


def _get(url: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bridge_address_route_and_hosts(busybox: str) -> None:
    r = imgtool(
        "run",
        "--rm",
        "--name",
        "probe",
        busybox,
        "sh",
        "-c",
        "ip -4 addr show eth0; ip route; cat /etc/hosts",
    )
    assert r.code == 0, r.err
    assert "inet 10.89.0." in r.out and "default via 10.89.0.1 dev eth0" in r.out
    assert "probe" in r.out.split("127.0.0.1")[-1]
    assert links.bridge_exists()


def test_published_port_on_localhost_and_names(busybox: str) -> None:
    port = free_port()
    r = imgtool(
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        f"127.0.0.1:{port}:80",
        busybox,
        "sh",
        "-c",
        HTTPD.format(name="web"),
    )
    assert r.code == 0, r.err
    assert _get(f"http://127.0.0.1:{port}/") == "hello-from-web\n"
    r = imgtool("run", "--rm", busybox, "wget", "-qO-", "http://web/")
    assert r.code == 0 and r.out == "hello-from-web\n", r.err
    r = imgtool("run", "--rm", "-p", f"127.0.0.1:{port}:80", busybox, "true")
    assert r.code == 125 and "already published by container web" in r.err
    assert imgtool("rm", "-f", "web").code == 0
    time.sleep(0.5)
    assert nat.rules_of() == []


def test_hosts_files_follow_containers_and_addresses_are_not_reused_at_once(
    busybox: str, store: Store
) -> None:
    def start(name: str) -> str:
        r = imgtool("run", "-d", "--name", name, busybox, "sleep", "60")
        assert r.code == 0, r.err
        return r.out.strip()

    alpha = start("alpha")
    beta = start("beta")
    alpha_hosts = store.root / "containers" / alpha / "hosts"
    beta_address = json.loads((store.root / "containers" / beta / "state.json").read_text())[
        "extra"
    ]["address"]
    assert f"{beta_address}\tbeta\n" in alpha_hosts.read_text()
    assert "\talpha\n" in (store.root / "containers" / beta / "hosts").read_text()
    assert imgtool("rm", "-f", "beta").code == 0
    assert "beta" not in alpha_hosts.read_text()  # the address will be someone else's
    r = imgtool("run", "--rm", busybox, "sh", "-c", "ip -4 addr show eth0")
    assert r.code == 0 and f"inet {beta_address}/" not in r.out, r.out
    r = imgtool("run", "--rm", busybox, "grep", "-c", "alpha", "/etc/hosts")
    assert r.out.strip() == "1", r.out
    assert imgtool("rm", "-f", "alpha").code == 0


def test_port_in_use_on_the_host_is_refused(busybox: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = imgtool("run", "--rm", "-p", f"127.0.0.1:{port}:80", busybox, "true")
    assert r.code == 125 and f"port {port}/tcp" in r.err and "already in use" in r.err


def test_publish_all_exposed_ports(busybox: str, hub: Registry, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f'FROM busybox\nEXPOSE 80\nCMD ["sh", "-c", "{HTTPD.format(name="exposed")}"]\n'
    )
    assert imgtool("build", "-t", "exposed:1", str(ctx)).code == 0
    r = imgtool("run", "-d", "--name", "exposed", "-P", "exposed:1")
    assert r.code == 0, r.err
    info = imgtool("network", "inspect").out
    assert "exposed" in info
    rules = nat.rules_of()
    assert rules
    out = subprocess.run(
        ["nft", "list", "table", "ip", "imgtool"], capture_output=True, text=True
    ).stdout
    port = int(out.split("tcp dport ")[1].split()[0])
    assert _get(f"http://127.0.0.1:{port}/") == "hello-from-exposed\n"
    assert imgtool("rm", "-f", "exposed").code == 0


UDP_ECHO = (
    'use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalPort => 9999, Proto => "udp")'
    ' or die "bind: $!"; while (1) { $s->recv(my $m, 512); $s->send("echo:$m") }'
)


def test_published_udp_port(debian: Path, tmp_path: Path) -> None:
    """UDP through a published port, both ways (the reply goes back through conntrack's
    reverse NAT); the server is perl from the Debian image, busybox has no UDP server."""
    root = tmp_path / "root"
    shutil.copytree(debian, root)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = ["--root", str(root)]
    r = imgtool(
        *store,
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        f"127.0.0.1:{port}:9999/udp",
        "latest",
        "perl",
        "-e",
        UDP_ECHO,
    )
    assert r.code == 0, r.err
    try:
        assert any("udp dport" in line for line in _nft_lines())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            deadline = time.monotonic() + 15
            while True:
                s.sendto(b"ping", ("127.0.0.1", port))
                try:
                    data = s.recv(512)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
        assert data == b"echo:ping"
    finally:
        assert imgtool(*store, "rm", "-f", "udp").code == 0
    assert nat.rules_of() == []


def _nft_lines() -> list[str]:
    out = subprocess.run(["nft", "list", "table", "ip", "imgtool"], capture_output=True, text=True)
    return out.stdout.splitlines()


@pytest.fixture
def outside() -> Iterator[str]:
    """A host on a network of the test's own: a namespace behind a veth, serving HTTP."""
    ns = f"imgtool-test-ext-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cmds = [
            ["ip", "link", "add", "imgtext0", "type", "veth", "peer", "name", "imgtext1"],
            ["ip", "link", "set", "imgtext1", "netns", ns],
            ["ip", "addr", "add", "10.250.0.1/24", "dev", "imgtext0"],
            ["ip", "link", "set", "imgtext0", "up"],
            ["ip", "-n", ns, "addr", "add", "10.250.0.2/24", "dev", "imgtext1"],
            ["ip", "-n", ns, "link", "set", "imgtext1", "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
        ]
        for c in cmds:
            subprocess.run(c, check=True)
        www = Path(f"/tmp/{ns}")
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text("outside\n")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "10.250.0.2",
                "--directory",
                str(www),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield "10.250.0.2:8000"
        finally:
            server.terminate()
            server.wait(timeout=10)
            shutil.rmtree(www, ignore_errors=True)
    finally:
        subprocess.run(["ip", "link", "del", "imgtext0"], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_outbound_nat_to_a_test_host(busybox: str, outside: str) -> None:
    r = imgtool(
        "run",
        "--rm",
        busybox,
        "sh",
        "-c",
        f"for i in 1 2 3 4 5; do wget -qO- http://{outside}/ && break; sleep 0.3; done",
    )
    assert r.code == 0 and r.out == "outside\n", r.err


def test_none_and_host_still_work(busybox: str) -> None:
    r = imgtool("run", "--rm", "--network", "none", busybox, "ls", "/sys/class/net")
    assert r.out.split() == ["lo"]
    r = imgtool("run", "--rm", "--network", "none", "-p", "8080:80", busybox, "true")
    assert r.code == 125 and "need --network bridge" in r.err


def test_nothing_left_and_network_rm(busybox: str) -> None:
    assert imgtool("run", "--rm", busybox, "true").code == 0
    assert [
        n
        for n in os.listdir("/var/run/netns")
        if n.startswith("imgtool-") and not n.startswith("imgtool-test")
    ] == []
    assert veths_left() == []
    assert nat.rules_of() == []
    r = imgtool("network", "rm")
    assert r.code == 0 and not links.bridge_exists()
    r = subprocess.run(["nft", "list", "table", "ip", "imgtool"], capture_output=True)
    assert r.returncode != 0


def test_subnet_overlapping_a_host_route_is_refused(busybox: str, outside: str) -> None:
    # the outside fixture routes 10.250.0.0/24 on this host
    r = imgtool("run", "--rm", busybox, "true", env={"IMGTOOL_SUBNET": "10.250.0.0/24"})
    assert r.code == 125 and "overlaps the host route 10.250.0.0/24" in r.err
    assert [
        n
        for n in os.listdir("/var/run/netns")
        if n.startswith("imgtool-") and not n.startswith("imgtool-test")
    ] == []


def test_two_first_runs_at_once_share_one_bridge(busybox: str) -> None:
    imgtool("network", "rm")
    procs = [
        spawn("run", "--rm", busybox, "sh", "-c", "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'")
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    addresses = [o.strip() for o, _ in outs]
    assert len(set(addresses)) == 3, addresses  # never the same address twice
    out = subprocess.run(
        ["nft", "list", "table", "ip", "imgtool"], capture_output=True, text=True
    ).stdout
    assert out.count("masquerade") == 2  # the table was made once
