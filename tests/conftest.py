"""Shared fixtures: an isolated environment per test, a store in tmp_path, test images made from
real bits, and the real registry (Debian's docker-registry on 127.0.0.1) in three flavours."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool.store import Store
from tests.support import podman as podman_support
from tests.support.corpus import in_ci
from tests.support.registry import REGISTRY_BIN, Registry
from tests.support.tokenserver import TokenServer

REPO = Path(__file__).resolve().parents[1]
SKOPEO = shutil.which("skopeo")
USERS = {"alice": "wonderland"}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real user's credentials, registries.conf or store."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(home / "registries.conf"))
    monkeypatch.setenv("IMGTOOL_ROOT", str(tmp_path / "store"))
    for var in (
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
        "XDG_RUNTIME_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@dataclass
class Result:
    code: int
    out: str
    err: str


def imgtool(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> Result:
    """Run the CLI as a user types it."""
    proc = subprocess.run(
        [sys.executable, "-m", "imgtool", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def spawn(*args: str, capture: bool = True) -> subprocess.Popen:
    """Start the CLI in the background, as a user's second terminal would."""
    pipe = subprocess.PIPE if capture else None
    return subprocess.Popen(
        [sys.executable, "-m", "imgtool", *args], cwd=REPO, stdout=pipe, stderr=pipe, text=True
    )


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """OCI layouts made from Debian's busybox-static (and a multi-platform index)."""
    if not make_images.BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (/bin/busybox)")
    base = tmp_path_factory.mktemp("images")
    return {
        "busybox": make_images.make_busybox(base / "busybox"),
        "multiarch": make_images.make_multiarch(base / "multiarch"),
    }


@pytest.fixture(scope="session")
def debian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer Debian image (debootstrap --variant=minbase, cached) as an OCI layout,
    which is also a store: `imgtool --root DIR … latest`."""
    try:
        make_images.debian_rootfs_tar()  # the cached one, else debootstrap makes it
    except FileNotFoundError:
        pytest.skip("debootstrap is not installed (and no Debian root is cached)")
    except (subprocess.CalledProcessError, RuntimeError) as e:
        pytest.skip(f"could not debootstrap a Debian root: {e}")
    return make_images.make_debian(tmp_path_factory.mktemp("debian") / "layout")


def seed(reg: Registry, layout: Path, dest: str, creds: str | None = None) -> None:
    """Put a layout's `latest` into the registry with skopeo, an independent peer: what skopeo
    pushes, imgtool must pull."""
    assert SKOPEO
    cmd = [
        SKOPEO,
        "copy",
        "--quiet",
        "--all",
        f"oci:{layout}:latest",
        f"docker://{reg.host}/{dest}",
    ]
    if reg.mode == "tls":
        cmd += ["--dest-cert-dir", str(reg.ca_dir)]
    else:
        cmd += ["--dest-tls-verify=false"]
    if creds:
        cmd += ["--dest-creds", creds]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _need_registry() -> None:
    if not REGISTRY_BIN:
        pytest.skip("Debian's docker-registry is not installed")
    if not SKOPEO:
        pytest.skip("skopeo is not installed (it seeds the test registry)")


@pytest.fixture(scope="session")
def plain_registry(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path]
) -> Iterator[Registry]:
    _need_registry()
    reg = Registry(tmp_path_factory.mktemp("registry-plain")).start()
    try:
        seed(reg, images["busybox"], "library/busybox:latest")
        seed(reg, images["busybox"], "team/app:1.0")
        seed(reg, images["multiarch"], "multi/busybox:latest")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path]
) -> Iterator[Registry]:
    _need_registry()
    reg = Registry(tmp_path_factory.mktemp("registry-tls"), mode="tls", users=USERS).start()
    try:
        seed(reg, images["busybox"], "private/busybox:latest", creds="alice:wonderland")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def podman(
    tmp_path_factory: pytest.TempPathFactory, plain_registry: Registry
) -> Iterator[podman_support.Podman]:
    """Podman with a configuration and store of its own (tests/support/podman.py), the test
    registry's busybox pulled and run once: the oracle for what Docker's defaults allow."""
    why = podman_support.unavailable()
    if why:
        pytest.skip(why)
    busybox = f"{plain_registry.host}/library/busybox:latest"
    root = tmp_path_factory.mktemp("podman")
    try:
        oracle = podman_support.start(root, plain_registry.host, busybox)
    except podman_support.PodmanUnavailable as e:
        pytest.skip(str(e))
    try:
        yield oracle
    finally:
        oracle.close()


@dataclass
class TokenSetup:
    registry: Registry
    tokens: TokenServer


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path]
) -> Iterator[TokenSetup]:
    _need_registry()
    work = tmp_path_factory.mktemp("registry-token")
    tokens = TokenServer(work / "tokens", users=dict(USERS)).start()
    reg = Registry(
        work / "registry", mode="token", token_realm=tokens.realm, token_cert=tokens.cert_path
    )
    try:
        reg.start()
        seed(reg, images["busybox"], "public/busybox:latest", creds="alice:wonderland")
        seed(reg, images["busybox"], "private/busybox:latest", creds="alice:wonderland")
        yield TokenSetup(reg, tokens)
    finally:
        reg.stop()
        tokens.stop()


def write_docker_config(home: Path, host: str, user: str, password: str) -> Path:
    import base64
    import json

    path = home / ".docker" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


@pytest.fixture
def hub(plain_registry: Registry, isolated_env: Path) -> Registry:
    """docker.io is mirrored by the test registry, so `FROM busybox` works offline."""
    (isolated_env / "registries.conf").write_text(
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        f'[[registry.mirror]]\nlocation = "{plain_registry.host}"\ninsecure = true\n'
    )
    return plain_registry


def veths_left(prefix: str = "imgv", settle: float = 3.0) -> list[str]:
    """Host ends of container veths still there after `settle` seconds: the kernel destroys a
    container's namespace, and its veth pair with it, in the background once imgtool drops it."""
    deadline = time.monotonic() + settle
    while True:
        words = Path("/proc/net/dev").read_text().split()
        left = [w.rstrip(":") for w in words if w.startswith(prefix)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_on_the_host() -> Iterator[None]:
    """After the whole suite: no container namespace, veth or NAT rule may be left; then the
    bridge and imgtool's nftables table, which the suite's containers made, are removed."""
    yield
    if os.geteuid() != 0:
        return
    netns = Path("/var/run/netns")
    left = [
        n
        for n in (os.listdir(netns) if netns.is_dir() else [])
        if n.startswith("imgtool-") and not n.startswith("imgtool-test")
    ]
    left += veths_left()
    if shutil.which("nft"):
        from imgtool.network import links, nat

        left += [comment for _, _, comment in nat.rules_of()]
        if not left:
            nat.remove_table()
            links.remove_bridge()
    assert not left, f"the suite left these behind: {left}"


# --- CI fails on unexpected skips --------------------------------------------------------------
# In CI (CI=true, as .ci/run has it) every test must run: test.sh installs every tool and runs
# as root. A skip is allowed only for what the CI machine cannot be given by installing a
# package; each such reason is listed here, once, with why. Any other skip fails the session.


@dataclass(frozen=True)
class AllowedSkip:
    pattern: str  # a regular expression searched for in the skip's reason
    why: str


ALLOWED_SKIPS = (
    # the i386 ABI of the seccomp filter: a kernel built without IA32 emulation cannot run it
    AllowedSkip(r"runs no i386 calls \(no IA32 emulation\)", "kernel build option"),
    # tests of one architecture's ABI, on a machine of another
    AllowedSkip(r"the i386 ABI is x86_64's", "another architecture"),
    AllowedSkip(r"no seccomp table for ", "another architecture"),
    AllowedSkip(r"the guest is built for x86_64", "another architecture"),
    # the debian-apt example needs Debian's mirror, which is outside the project's control; the
    # skip happens only when apt could not resolve or connect (tests/support/unreachable.py)
    AllowedSkip(r"no package mirror reachable", "the outside network is down"),
)


@dataclass(frozen=True)
class Skipped:
    nodeid: str
    reason: str

    def allowed_by(self) -> AllowedSkip | None:
        return next((a for a in ALLOWED_SKIPS if re.search(a.pattern, self.reason)), None)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipPolicy:
    """Records every skip (of a test or of a whole module at collection), lists them at the
    end, and turns a passing session into a failing one when a skip is not allowed."""

    def __init__(self) -> None:
        self.skipped: list[Skipped] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(Skipped(report.nodeid, _skip_reason(report)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def unexpected(self) -> list[Skipped]:
        return [s for s in self.skipped if s.allowed_by() is None]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr = terminalreporter
        tr.section("skips (CI)")
        for s in self.skipped:
            allowed = s.allowed_by()
            verdict = f"allowed: {allowed.why}" if allowed else "NOT ALLOWED in CI"
            tr.write_line(f"SKIP {s.nodeid}: {s.reason} [{verdict}]")
        bad = len(self.unexpected())
        tr.write_line(
            f"{len(self.skipped)} skipped, {bad} not allowed in CI"
            + (" (see ALLOWED_SKIPS in tests/conftest.py): the session fails" if bad else "")
        )


def pytest_configure(config: pytest.Config) -> None:
    if in_ci():
        config.pluginmanager.register(SkipPolicy(), "imgtool-skip-policy")
