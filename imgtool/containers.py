"""Container records on disk: `<store>/containers/<id>/` holds state.json, the overlay's upper
and work dirs, the mount point, /etc/hosts and friends, and the log of a detached container.

A record says "running" with the PID of the container's init and its start time (from
/proc/<pid>/stat, so that a reused PID is not mistaken for it). A record whose process is gone
without an exit status belongs to a killed imgtool: `reap_stale()` finishes its clean-up.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import time

from imgtool import inroot
from imgtool.atomic import atomic_write, flocked
from imgtool.errors import ImgtoolError
from imgtool.sandbox import cgroups, liveness
from imgtool.store import as_path
from imgtool.values import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"  # compiled (and cached by re) when a name is given


class ContainerNotFound(ImgtoolError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no such container: {name}")


class Record(Value):
    """A container's state, as state.json keeps it (`as_dict`, and `Record(**doc)` back)."""

    __slots__ = (
        "id",
        "name",
        "image",
        "image_digest",
        "command",
        "created",
        "status",
        "pid",
        "pid_start",
        "monitor_pid",
        "exit_code",
        "oom_killed",
        "finished",
        "auto_remove",
        "detached",
        "extra",
    )

    def __init__(
        self,
        id: str,
        name: str,
        image: str,
        image_digest: str,
        command: list[str],
        created: float,
        status: str = "created",  # created | running | exited
        pid: int = 0,
        pid_start: str = "",
        monitor_pid: int = 0,
        exit_code: int | None = None,
        oom_killed: bool = False,
        finished: float | None = None,
        auto_remove: bool = False,
        detached: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.name = name
        self.image = image
        self.image_digest = image_digest
        self.command = command
        self.created = created
        self.status = status
        self.pid = pid
        self.pid_start = pid_start
        self.monitor_pid = monitor_pid
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.finished = finished
        self.auto_remove = auto_remove
        self.detached = detached
        self.extra: dict[str, Any] = {} if extra is None else extra

    @property
    def short_id(self) -> str:
        return self.id[:12]


def proc_start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def alive(pid: int, start: str) -> bool:
    return bool(pid) and proc_start_time(pid) == start and start != ""


class Containers:
    def __init__(self, store_root: str | os.PathLike[str]) -> None:
        # strings (os.path), not pathlib: see store.as_path
        self.root_str = os.path.join(store_root, "containers")

    def dir(self, cid: str) -> Path:
        return as_path(self.dir_str(cid))

    def dir_str(self, cid: str) -> str:
        return os.path.join(self.root_str, cid)

    def create(
        self,
        name: str,
        image: str,
        image_digest: str,
        command: list[str],
        auto_remove: bool,
        detached: bool,
        extra: dict[str, Any] | None = None,
    ) -> Record:
        os.makedirs(self.root_str, exist_ok=True)
        lock = os.path.join(os.path.dirname(self.root_str), "containers.lock")
        with flocked(lock):  # one name, one container
            cid = os.urandom(32).hex()
            if name:
                if not re.fullmatch(NAME_PATTERN, name):
                    raise ImgtoolError(
                        f"invalid container name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
                    )
                if any(r.name == name for r in self.list()):
                    raise ImgtoolError(
                        f"the container name {name!r} is already in use (imgtool rm it first)"
                    )
            else:
                name = f"imgtool_{cid[:8]}"
            d = self.dir_str(cid)
            os.mkdir(d)
            for sub in ("upper", "work", "rootfs"):
                os.mkdir(os.path.join(d, sub))
            rec = Record(
                cid,
                name,
                image,
                image_digest,
                command,
                time.time(),
                auto_remove=auto_remove,
                detached=detached,
                extra=extra,
            )
            self.save(rec)  # once, whole: with what gc must keep for it (`extra`)
            return rec

    def save(self, rec: Record) -> None:
        # a container's state does not outlive the machine: no fsync on the run path
        atomic_write(
            os.path.join(self.dir_str(rec.id), "state.json"),
            json.dumps(rec.as_dict()).encode(),
            durable=False,
        )

    def load(self, cid: str) -> Record:
        try:
            with open(os.path.join(self.dir_str(cid), "state.json"), "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError):
            raise ContainerNotFound(cid) from None
        return Record(**doc)

    def list(self) -> list[Record]:
        if not os.path.isdir(self.root_str):
            return []
        out = []
        for name in os.listdir(self.root_str):
            with contextlib.suppress(ContainerNotFound, TypeError):
                out.append(self.load(name))
        return sorted(out, key=lambda r: r.created, reverse=True)

    def find(self, key: str) -> Record:
        recs = self.list()
        for r in recs:
            if r.name == key or r.id == key:
                return r
        hits = [r for r in recs if len(key) >= 3 and r.id.startswith(key)]
        if len(hits) == 1:
            return hits[0]
        raise ContainerNotFound(key)

    def is_running(self, rec: Record) -> bool:
        return rec.status == "running" and alive(rec.pid, rec.pid_start)

    def remove(self, rec: Record) -> None:
        for d in cgroups.dirs_of(rec.id):
            cgroups.remove_dir(d)
        with contextlib.suppress(OSError):  # a tree a container wrote: any depth
            inroot.remove_tree(self.dir_str(rec.id))

    def reap_stale(self) -> builtins.list[str]:  # `list` is a method here
        """Finish what a killed imgtool left: records of dead containers, their cgroups, and
        the directories of --rm containers. Returns the ids cleaned.

        A container whose liveness lock is held belongs to a living imgtool (a run, or the
        monitor of a detached one), which records its end itself: it is never touched here."""
        # first the cgroups nobody holds: what runs there lost its owner (a killed imgtool) and
        # is killed, so that the records below see their containers gone
        for d in cgroups.stale():
            cgroups.remove_dir(d)
        cleaned = []
        for rec in self.list():
            if rec.status == "exited" or liveness.held(rec.id):
                continue
            try:  # read again: its owner may have recorded the end, and let go, just now
                rec = self.load(rec.id)
            except ContainerNotFound:
                continue
            if rec.status == "running" and not self.is_running(rec):
                rec.status, rec.finished = "exited", time.time()
                if rec.exit_code is None:
                    rec.exit_code = 137
                cleaned.append(rec.id)
                with contextlib.suppress(OSError):  # another command may be reaping it too
                    self.save(rec)
                if rec.auto_remove:
                    self.remove(rec)
            elif rec.status == "created" and time.time() - rec.created > 60:
                self.remove(rec)  # never started: a run that died before its container
                cleaned.append(rec.id)
        self._reap_networks()
        liveness.sweep()
        return cleaned

    def _reap_networks(self) -> None:
        """Namespaces, veths, NAT rules and addresses of bridge containers that are gone."""
        netns_dir = "/var/run/netns"
        if not os.path.isdir(netns_dir) or not any(
            n.startswith("imgtool-") for n in os.listdir(netns_dir)
        ):
            return
        from imgtool.network import ipam, links, nat  # only when there is work

        for short in links.stale():
            with contextlib.suppress(Exception):
                nat.unpublish(short)
                links.remove(short)
            with contextlib.suppress(OSError):
                for owner in ipam.Ipam().entries().values():
                    if owner.get("id", "").startswith(short):
                        ipam.Ipam().free(owner["id"])
