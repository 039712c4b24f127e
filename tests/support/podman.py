"""Podman (Debian's) as the oracle of what Docker's defaults allow, for the confinement tests.

It runs with configuration files of its own, so nothing of the host's (/etc/containers, /etc/cni,
/var/lib/containers) is read or changed:
- CONTAINERS_CONF: runc, Docker's default capability set (whatever containers-common's version ships),
  rlimits at or under this process's hard limits (without CAP_SYS_RESOURCE, as here, runc fails
  "setrlimit … Operation not permitted" on podman's own defaults), cgroupfs, a file event log,
  runtime state under our root, and no network by default (a bridge would add the host's
  iptables rules and a cni-podman0 link; the tests name --network when it matters);
- CONTAINERS_STORAGE_CONF: graph and run roots under our root (overlay);
- CONTAINERS_REGISTRIES_CONF: the test registry, plain HTTP;
- a signature policy that accepts anything, given on each pull.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PODMAN = shutil.which("podman")
# moby's default set (oci/caps/defaults.go), the oracle's too
DOCKER_DEFAULT_CAPS = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
)
# podman raises its own RLIMIT_NPROC to this and no further; conmon and runc inherit it
PODMAN_NPROC = 32768


class PodmanUnavailable(Exception):
    """Why podman cannot serve as the oracle here (the message is the skip reason)."""


def unavailable() -> str | None:
    """Why podman cannot run here at all, or None."""
    if not PODMAN:
        return "podman is not installed (test.sh installs Debian's; the cgroup v2 guest has none)"
    if os.geteuid() != 0:
        return "the podman oracle runs rootful, as imgtool's runtime tests do"
    return None


def _limit(which: int, cap: int | None = None) -> int:
    _, hard = resource.getrlimit(which)
    values = [v for v in (hard, cap) if v is not None and v != resource.RLIM_INFINITY]
    return min(values) if values else 1 << 20


def containers_conf(root: Path) -> str:
    nofile = _limit(resource.RLIMIT_NOFILE, 1 << 20)
    nproc = _limit(resource.RLIMIT_NPROC, PODMAN_NPROC)
    caps = ", ".join(f'"CAP_{c}"' for c in DOCKER_DEFAULT_CAPS)
    return (
        "[containers]\n"
        f"default_capabilities = [{caps}]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        'netns = "none"\n'
        "[engine]\n"
        # runc, which test.sh installs: podman would take crun where it is installed, and crun
        # refuses a v1/v2 hybrid host with a controller on the v2 side
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'tmp_dir = "{root}/run/libpod"\n'
        f'volume_path = "{root}/volumes"\n'
        "[network]\n"
        f'network_config_dir = "{root}/cni"\n'
    )


def storage_conf(root: Path) -> str:
    return f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/graph"\nrunroot = "{root}/run"\n'


def registries_conf(registry_host: str) -> str:
    return f'[[registry]]\nlocation = "{registry_host}"\ninsecure = true\n'


@dataclass
class Podman:
    """One podman store and configuration for the whole test session."""

    root: Path
    env: dict[str, str]
    policy: Path
    pulled: dict[str, str] = field(default_factory=dict)

    @classmethod
    def configure(cls, root: Path, registry_host: str) -> Podman:
        files = {
            "containers.conf": containers_conf(root),
            "storage.conf": storage_conf(root),
            "registries.conf": registries_conf(registry_host),
            "policy.json": json.dumps({"default": [{"type": "insecureAcceptAnything"}]}),
        }
        for name, text in files.items():
            (root / name).write_text(text)
        env = {
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        }
        return cls(root, env, root / "policy.json")

    def __call__(
        self, *args: str, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert PODMAN
        return subprocess.run(
            [PODMAN, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def pull(self, source: str) -> str:
        """Pull a registry reference or an `oci:DIR:TAG` layout once; returns the image id."""
        if source not in self.pulled:
            r = self("pull", "-q", "--signature-policy", str(self.policy), source, timeout=300)
            if r.returncode != 0:
                raise PodmanUnavailable(f"podman pull {source} failed: {_last_line(r.stderr)}")
            self.pulled[source] = r.stdout.split()[-1]
        return self.pulled[source]

    def probe(self, image: str) -> None:
        """Run a container once: a podman that cannot (rlimits, cgroups, storage) is no oracle."""
        r = self("run", "--rm", image, "true")
        if r.returncode != 0:
            raise PodmanUnavailable(f"podman run fails here: {_last_line(r.stderr)}")

    def close(self) -> None:
        self("rm", "--all", "--force", "--time", "0")
        self("rmi", "--all", "--force")
        # podman's overlay driver bind-mounts its graph directory on itself, and leaves it so
        # (os.path.ismount cannot see a bind mount on the same device: umount says)
        overlay = self.root / "graph" / "overlay"
        subprocess.run(["umount", "--lazy", str(overlay)], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def start(root: Path, registry_host: str, busybox: str) -> Podman:
    """A configured podman that has pulled `busybox` and run it; raises PodmanUnavailable."""
    podman = Podman.configure(root, registry_host)
    podman.probe(podman.pull(busybox))
    return podman
