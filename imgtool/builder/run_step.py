"""RUN: a step in the runtime's sandbox over an overlay of the stage; its upper dir is the layer."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from imgtool import inroot, oci
from imgtool.builder import sourcetree
from imgtool.builder.cache import _key, cache_mount_dir
from imgtool.builder.common import (
    DEFAULT_PATH,
    STUB_PATHS,
    ImageState,
    Layer,
    _heredoc_script,
    _Mount,
    _StageContext,
    foreign_platform,
)
from imgtool.builder.sourcetree import Comps, Root
from imgtool.containerfile import values
from imgtool.containerfile.flags import MountSpec
from imgtool.containerfile.instructions import Run
from imgtool.containerfile.parser import Instruction
from imgtool.digest import Digest
from imgtool.errors import (
    BuildError,
    RunStepFailed,
)

if TYPE_CHECKING:
    from imgtool.builder.layered import LayerStack
    from imgtool.builder.session import BuildSession
    from imgtool.sandbox.spec import BindMount, TmpfsMount

BUILD_HOSTNAME = "imgtool-build"
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class RunStep:
    """RUN: the step's command in the sandbox; what it wrote is its layer."""

    def __init__(self, session: BuildSession) -> None:
        self.s = session

    def __call__(
        self, state: ImageState, step: Run, ctx: _StageContext, env: Mapping[str, str]
    ) -> bool:
        inst = step.source
        foreign = foreign_platform(state.config)
        if foreign is not None:
            raise BuildError(
                f"RUN in a stage for {foreign}: this host runs {oci.Platform.host()}, and"
                " imgtool runs no other platform's programs (no emulation, no cross builds)"
            )
        cfg = state.config["config"]
        if step.json:
            argv = list(step.command)
        else:
            script = step.command[0] if step.command else ""
            if inst.heredocs:
                script = _heredoc_script(script, inst)
            argv = ctx.shell(cfg) + [script]
        run_env = {**{k: v for k, v in ctx.args.items()}, **state.env}
        run_env.setdefault("PATH", DEFAULT_PATH)
        network = step.network
        mounts = [self._mount(m, ctx, i) for i, m in enumerate(step.mounts)]
        agent = next((m.target for m in mounts if m.kind == "ssh"), None)
        if agent is not None:  # as BuildKit: the first ssh mount is the step's agent
            run_env.setdefault("SSH_AUTH_SOCK", agent)
        key = _key(
            state.key,
            "RUN",
            argv,
            sorted(run_env.items()),
            network,
            [(m.kind, m.target, m.readonly, m.key) for m in mounts],
            cfg.get("User"),
            cfg.get("WorkingDir"),
        )
        inputs = {"parent": state.key, "instruction": argv, "args": dict(ctx.used_args)}
        hit = self.s.cached(ctx, step, inputs, key)
        cached = hit is not None
        if hit is None:
            hit = self._execute_run(state, inst, ctx, argv, run_env, network, mounts)
            self.s.cache.put(key, hit)
        created_by = f"RUN {' '.join(argv) if not step.json else json.dumps(argv)}"
        self.s.add_layer(state, ctx, hit, created_by, key)
        return cached

    def _mount(self, spec: MountSpec, ctx: _StageContext, index: int = 0) -> _Mount:
        """What a --mount (typed and checked before the build) gives this step."""
        kind, target = spec.kind, spec.target
        if kind == "cache":
            cid = spec.get("id") or target
            with self.s.lock:
                if cid not in self.s.cache_mounts:
                    self.s.cache_mounts.append(cid)
            d = cache_mount_dir(self.s.cache_dir, cid)
            d.mkdir(parents=True, exist_ok=True)
            return _Mount("cache", target, str(d), spec.is_true("readonly"), cid)
        if kind == "secret":
            sid = spec.get("id") or os.path.basename(target)
            src = self.s.opts.secrets.get(sid)
            if src is None:
                if spec.is_true("required"):
                    raise BuildError(f"secret {sid!r} is required: give --secret id={sid},src=…")
                return _Mount("none", "", "", True, "")
            return _Mount(
                "secret",
                target or f"/run/secrets/{sid}",
                str(src),
                True,
                Digest.of(sid.encode()).encoded,
            )  # never the content
        if kind == "ssh":
            return self._ssh_mount(spec, target or f"/run/buildkit/ssh_agent.{index}")
        if kind == "tmpfs":
            size = _byte_size(spec.get("size", "0"))
            return _Mount("tmpfs", target, "", False, str(size), size=size)
        frm = spec.get("from")
        source, writable = spec.get("source") or ".", spec.is_true("readwrite")
        if frm:
            key = _key(self.s.source_key(ctx, frm), "mount", source)
            return _Mount("bind", target, "", not writable, key, deferred=(frm, source, writable))
        return self._bind(target, self.s.context, source, writable)

    def _made(self, m: _Mount, ctx: _StageContext) -> _Mount:
        """A deferred bind of a stage or an image, now that the step runs: its tree made
        (once per build) and the source resolved inside it; the key stays."""
        if m.deferred is None:
            return m
        frm, source, writable = m.deferred
        return self._bind(m.target, self.s.source_root(ctx, frm), source, writable, m.key)

    def _ssh_mount(self, spec: MountSpec, target: str) -> _Mount:
        """An ssh agent's socket that --ssh forwarded, bound where the step finds it; the
        step may connect to it, and nothing of it reaches the layer."""
        sid = spec.get("id") or "default"
        sock = self.s.opts.ssh.get(sid)
        if sock is None:
            if spec.is_true("required"):
                raise BuildError(f"ssh {sid!r} is required: give --ssh {sid}=SOCKET")
            return _Mount("none", "", "", True, "")
        try:
            is_socket = stat.S_ISSOCK(os.stat(sock).st_mode)
        except OSError as e:
            raise BuildError(f"--ssh {sid}={sock}: {e.strerror}") from None
        if not is_socket:
            raise BuildError(f"--ssh {sid}={sock}: not a socket (an agent's SSH_AUTH_SOCK)")
        key = Digest.of(sid.encode()).encoded  # the id, never the socket's path
        return _Mount("ssh", target, str(sock), True, key)

    def _bind(self, target: str, root: Root, source: str, writable: bool, key: str = "") -> _Mount:
        """A bind mount of the context or of a stage. The step sees a copy, not the tree
        itself, when it may write (BuildKit drops those writes; the context is not the step's
        to change) and when .dockerignore leaves something out (what the context does not
        send, a step does not see)."""
        comps = self._mount_source(root, source)
        left_out: list[Comps] = []
        skip = None
        if root is self.s.context:

            def skip(c: Comps) -> bool:
                if self.s.ignored(c):
                    left_out.append(c)
                    return True
                return False

        digest = key or sourcetree.tree_digest(root.fd, comps, skip)
        if writable or left_out:
            return _Mount("bind", target, "", not writable, digest, (root, comps))
        return _Mount("bind", target, root.host_path(comps), True, digest)

    def _mount_source(self, root: Root, source: str) -> Comps:
        """A bind mount's source resolved inside its root; its host path then has no symlink
        left in it for the mount to follow."""
        try:
            comps = sourcetree.resolve(root.fd, source)
            if root is self.s.context and self.s.ignored(comps):
                raise FileNotFoundError(source)  # .dockerignore leaves it out of the context
            return comps
        except (FileNotFoundError, NotADirectoryError):
            link = sourcetree.escaping_link(root.fd, source)
            why = (
                f": the symlink {link[0]!r} points to {link[1]!r}, outside it (a link is"
                " followed inside the tree it is in)"
                if link
                else ""
            )
            raise BuildError(f"--mount source {source!r} not found in {root.label}{why}") from None
        except OSError as e:
            raise BuildError(f"--mount source {source!r} in {root.label}: {e.strerror}") from None

    def _execute_run(
        self,
        state: ImageState,
        inst: Instruction,
        ctx: _StageContext,
        argv: list[str],
        env: dict[str, str],
        network: str,
        mounts: list[_Mount],
    ) -> Layer:
        cfg = state.config["config"]
        mounts = [self._made(m, ctx) for m in mounts]
        lowers = self.s.lower_names(state)
        step = Path(tempfile.mkdtemp(prefix="run.", dir=self.s.work))
        for d in ("upper", "work", "rootfs", "etc", "mounts"):
            (step / d).mkdir()
        # the mount points the set-up makes where the image has nothing are not part of the
        # layer; they are made where their paths lead inside the image
        stack = self.s.stack(state)
        created = set()
        for path in STUB_PATHS + tuple(m.target for m in mounts if m.target):
            found = stack.lookup(path)
            if found.st is None:
                created.add("/".join(found.comps))
        from imgtool.sandbox.spec import DEFAULT_CAPS, SandboxSpec  # only when a step runs

        spec = SandboxSpec(
            argv=argv,
            lower_dirs=lowers,
            layers_dir=str(self.s.layers.root),
            upper_dir=str(step / "upper"),
            work_dir=str(step / "work"),
            rootfs=str(step / "rootfs"),
            env=env,
            cwd=cfg.get("WorkingDir") or "/",
            user=cfg.get("User") or "",
            hostname=BUILD_HOSTNAME,
            network=network,
            mounts=self._bind_mounts(mounts, step / "mounts"),
            etc_files=_etc_files(step / "etc", network),
            stdin=False,
            caps=DEFAULT_CAPS,
            seccomp=self.s.default_seccomp(DEFAULT_CAPS),
            volatile=True,  # the upper dir is read into a layer, then removed
        )
        try:
            from imgtool.builder import sandboxed  # a fully cached build runs no step

            end = sandboxed.run_step(self.s, spec, ctx.stage.name)
            if end.status != 0:
                raise RunStepFailed(
                    ctx.stage.name,
                    inst.original.splitlines()[0][:200],
                    end.status,
                    f"{self.s.file_label}:{inst.line}",
                    output_tail=end.output_tail,
                )

            def skip(rel: str) -> bool:
                return rel in created or any(
                    rel.startswith(c + "/") for c in created if c in ("proc", "sys", "dev")
                )

            _prune_mount_points(step / "upper", created, stack)
            return self.s.layer_from_dir(step / "upper", skip)
        finally:
            with contextlib.suppress(OSError):  # a tree a container wrote: any depth
                inroot.remove_tree(step)

    def _bind_mounts(self, mounts: list[_Mount], copies: Path) -> list[BindMount | TmpfsMount]:
        """What the sandbox mounts; a writable bind gets a copy of its source in the step's
        directory: BuildKit drops what a RUN step writes there, and the context is not the
        step's to change."""
        from imgtool.builder.copier import Ownership, copy_entry, copy_tree
        from imgtool.sandbox.spec import BindMount, TmpfsMount

        out: list[BindMount | TmpfsMount] = []
        for i, m in enumerate(mounts):
            if m.kind == "tmpfs":
                out.append(TmpfsMount(m.target, m.size))
                continue
            source = m.source
            if m.copy_of is not None:
                root, comps = m.copy_of
                source = str(copies / str(i))
                with (
                    inroot.opened(inroot.open_root(str(copies))) as dst,
                    sourcetree.entry_of(root.fd, comps) as src,
                ):
                    keep = Ownership(None, None)
                    if stat.S_ISDIR(src.st.st_mode):
                        copy_tree(root.fd, src, dst, str(i), keep, self.s.skip_of(root))
                    else:
                        copy_entry(src, dst, str(i), keep)
            if source:
                out.append(BindMount(source, m.target, m.readonly))
        return out


def _byte_size(text: str) -> int:
    """A tmpfs size as BuildKit reads it (checked again once expanded)."""
    try:
        return values.byte_size(text)
    except ValueError as e:
        raise BuildError(f"--mount=type=tmpfs size {e}") from None


def _prune_mount_points(upper: Path, created: set[str], stack: LayerStack) -> None:
    """Take out of the step's upper dir what the sandbox's set-up made and the step left as
    it was: the empty mount points where the image had nothing, then each parent directory
    left empty that the image did not have, or has with the same mode and owner (its copy-up
    was for the mount point: /etc for /etc/hosts). Deepest first, so /a/b goes before /a."""
    for rel in sorted(created, key=lambda r: r.count("/"), reverse=True):
        comps = rel.split("/")
        for depth in range(len(comps), 0, -1):
            path = comps[:depth]
            in_image = None if depth == len(comps) else stack.lookup("/".join(path)).st
            if not _remove_if_untouched(upper, path, in_image):
                break


def _remove_if_untouched(upper: Path, comps: list[str], in_image: os.stat_result | None) -> bool:
    """Remove upper/comps if it is an empty file or directory that the image lacks (or has
    with the same mode and owner); the path is walked without following a symlink (the upper
    dir is what a container wrote)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        parent = os.open(upper, flags)
    except OSError:
        return False
    try:
        for name in comps[:-1]:
            nxt = os.open(name, flags, dir_fd=parent)
            os.close(parent)
            parent = nxt
        name = comps[-1]
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_size == 0 and in_image is None:
            os.unlink(name, dir_fd=parent)
            return True
        if not stat.S_ISDIR(st.st_mode):
            return False
        where = f"{inroot.fd_path(parent)}/{name}"
        if os.listdir(where) or _is_opaque(where):
            return False
        if in_image is not None and (
            not stat.S_ISDIR(in_image.st_mode)
            or (st.st_mode, st.st_uid, st.st_gid)
            != (in_image.st_mode, in_image.st_uid, in_image.st_gid)
        ):
            return False
        os.rmdir(name, dir_fd=parent)
        return True
    except OSError:  # changed under us, or not a directory on the way: left as it is
        return False
    finally:
        os.close(parent)


def _is_opaque(where: str) -> bool:
    for ns in ("trusted", "user"):
        with contextlib.suppress(OSError):
            if os.getxattr(where, f"{ns}.overlay.opaque", follow_symlinks=False) == b"y":
                return True
    return False


def _etc_files(where: Path, network: str) -> dict[str, str]:
    """/etc/hosts, /etc/hostname and /etc/resolv.conf for a step: copies in the step's
    directory (as containers get), never the host's own files. The host's network keeps the
    host's names; otherwise localhost and the build's hostname."""
    if network == "host":
        hosts = _host_file("/etc/hosts")
        hostname = os.uname().nodename
    else:
        hostname = BUILD_HOSTNAME
        hosts = f"{LOCALHOST}127.0.1.1\t{hostname}\n".encode()
    files = {"hosts": hosts, "hostname": f"{hostname}\n".encode()}
    files["resolv.conf"] = _host_file("/etc/resolv.conf")
    out = {}
    for name, data in files.items():
        (where / name).write_bytes(data)
        out[f"/etc/{name}"] = str(where / name)
    return out


def _host_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return b""
