"""`imgtool run`: an image's config and the user's options become a SandboxSpec; the container
is recorded, limited, run in the foreground or under a detached monitor, and cleaned up.

The image config is applied as Docker does: Entrypoint and Cmd (and their overrides), Env,
WorkingDir, User; the exit status is the command's (128+N for a signal, 137 for an OOM kill).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Callable

from imgtool import oci
from imgtool.containers import Containers, Record, alive, proc_start_time
from imgtool.errors import ImgtoolError, InvalidArgument, SandboxError
from imgtool.layer.unpacked import LayerStore
from imgtool.sandbox import cgroups, liveness, mountpoints, runner, seccomp_cache
from imgtool.sandbox.cgroups import Cgroup, Limits
from imgtool.sandbox.spec import (
    CAP_NUMBERS,
    DEFAULT_SECCOMP,
    BindMount,
    DeviceNode,
    SandboxSpec,
    TmpfsMount,
    resolve_caps,
)
from imgtool.store import Store
from imgtool.values import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import TypeVar

    _T = TypeVar("_T")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RunOptions(Value):
    """What `run` was asked for, beyond the image (the CLI's options, api.run's arguments)."""

    __slots__ = (
        "command",
        "entrypoint",
        "env",
        "workdir",
        "user",
        "volumes",
        "hostname",
        "name",
        "network",
        "limits",
        "rm",
        "detach",
        "tty",
        "interactive",
        "init",
        "read_only",
        "platform",
        "publish",
        "publish_all",
        "security_opts",
        "devices",
        "cap_add",
        "cap_drop",
        "privileged",
        "stdout",
        "stderr",
    )
    command: list[str]
    entrypoint: str | None
    env: list[str]
    workdir: str | None
    user: str | None
    volumes: list[str]
    hostname: str | None
    name: str
    network: str
    limits: Limits
    rm: bool
    detach: bool
    tty: bool
    interactive: bool
    init: bool
    read_only: bool
    platform: oci.Platform | None
    publish: list[str]
    publish_all: bool
    security_opts: list[str]
    devices: list[str]
    cap_add: list[str]
    cap_drop: list[str]
    privileged: bool
    stdout: int | None
    stderr: int | None

    def __init__(
        self,
        command: list[str] | None = None,
        entrypoint: str | None = None,
        env: list[str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        volumes: list[str] | None = None,
        hostname: str | None = None,
        name: str = "",
        network: str = "bridge",
        limits: Limits | None = None,
        rm: bool = False,
        detach: bool = False,
        tty: bool = False,
        interactive: bool = False,
        init: bool = False,
        read_only: bool = False,
        platform: oci.Platform | None = None,
        publish: list[str] | None = None,
        publish_all: bool = False,
        security_opts: list[str] | None = None,
        devices: list[str] | None = None,  # HOST[:CONTAINER][:rwm], as docker's
        cap_add: list[str] | None = None,
        cap_drop: list[str] | None = None,
        privileged: bool = False,
        stdout: int | None = None,  # a descriptor to give the command as its stdout (None: ours)
        stderr: int | None = None,
    ) -> None:
        self._init(
            command or [],
            entrypoint,
            env or [],
            workdir,
            user,
            volumes or [],
            hostname,
            name,
            network,
            Limits() if limits is None else limits,
            rm,
            detach,
            tty,
            interactive,
            init,
            read_only,
            platform,
            publish or [],
            publish_all,
            security_opts or [],
            devices or [],
            cap_add or [],
            cap_drop or [],
            privileged,
            stdout,
            stderr,
        )


def parse_limits(memory: str | int | None, cpus: str | float | None, pids: int | None) -> Limits:
    """Docker's -m, --cpus and --pids-limit, checked: a bad value is an InvalidArgument naming
    it (api.run and the CLI's `run`)."""
    return Limits(
        _parsed("memory", memory, cgroups.parse_memory),
        _parsed("cpus", cpus, cgroups.parse_cpus),
        cgroups.parse_pids(pids),
    )


def _parsed(name: str, value: object, parse: Callable[[str], _T]) -> _T | None:
    if value is None:
        return None
    try:
        return parse(str(value))
    except ValueError as e:
        raise InvalidArgument(name, value, str(e)) from None


class RunError(ImgtoolError):
    """A failure of imgtool's own (docker's 125), or of the command (126, 127)."""

    def __init__(self, message: str, status: int = runner.EXIT_SETUP_FAILED) -> None:
        self.status = status
        super().__init__(message)


def argv_for(config: dict, opts: RunOptions) -> list[str]:
    if opts.entrypoint is not None:
        entry = [opts.entrypoint] if opts.entrypoint else []
        cmd = list(opts.command)
    else:
        entry = list(config.get("Entrypoint") or [])
        cmd = list(opts.command) or list(config.get("Cmd") or [])
    argv = entry + cmd
    if not argv:
        raise RunError("no command specified: the image has no Entrypoint or Cmd; give one")
    return argv


def env_for(config: dict, opts: RunOptions, hostname: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOSTNAME"] = hostname
    if opts.tty:
        env.setdefault("TERM", "xterm")
    for item in opts.env:
        k, eq, v = item.partition("=")
        if not k:
            raise RunError(f"invalid -e {item!r}: expected NAME=value")
        if eq:
            env[k] = v
        elif k in os.environ:
            env[k] = os.environ[k]  # `-e NAME` passes the host's value, as docker does
    return env


def parse_volume(text: str) -> BindMount:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise RunError(f"invalid -v {text!r}: expected /host/path:/container/path[:ro|rw]")
    source, target = parts[0], parts[1]
    if not source.startswith("/"):
        raise RunError(
            f"invalid -v {text!r}: named volumes are not supported; give an absolute host path"
        )
    if not os.path.exists(source):
        raise RunError(f"invalid -v {text!r}: host path {source} does not exist")
    if not target.startswith("/") or target == "/":
        raise RunError(f"invalid -v {text!r}: the container path must be absolute, not /")
    return BindMount(
        os.path.realpath(source), os.path.normpath(target), len(parts) == 3 and parts[2] == "ro"
    )


def _etc_files(cdir: str, hostname: str, network: str) -> dict[str, str]:
    if network == "host":
        hosts = _read_text("/etc/hosts") if os.path.exists("/etc/hosts") else ""
        hostname = os.uname().nodename
    else:
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        if network != "bridge":  # on the bridge the name maps to the container's address
            hosts += f"127.0.1.1\t{hostname}\n"
    resolv = ""
    with contextlib.suppress(OSError):
        resolv = _read_text("/etc/resolv.conf")
    files = {"hosts": hosts, "hostname": hostname + "\n", "resolv.conf": resolv}
    out = {}
    for name, text in files.items():
        path = os.path.join(cdir, name)
        with open(path, "w") as f:
            f.write(text)
        out[f"/etc/{name}"] = path
    return out


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def prepare(store: Store, image_name: str, opts: RunOptions) -> tuple[Record, SandboxSpec]:
    """Check every option and the image, then record the container and describe its sandbox.
    Nothing is created before the last check has passed."""
    image = store.image(image_name, opts.platform)
    config = dict(image.config.config)
    argv = argv_for(config, opts)
    mounts: list[BindMount | TmpfsMount] = [parse_volume(v) for v in opts.volumes]
    if opts.network not in ("none", "host", "bridge"):
        raise RunError(f"unsupported network {opts.network!r}: use bridge, none or host")
    if (opts.publish or opts.publish_all) and opts.network != "bridge":
        raise RunError("-p/-P need --network bridge")
    caps = _capabilities(opts)
    seccomp = _seccomp_filter(opts.security_opts, opts.privileged, caps)
    if seccomp == DEFAULT_SECCOMP:  # compiled once per host, kept in the store
        seccomp = seccomp_cache.default_filter(
            caps, os.path.join(store.root_str, "cache", "seccomp")
        )
    nodes, rules = _devices(opts)
    env_for(config, opts, "")  # its errors before anything exists
    ports = _ports(opts, config, store)
    if opts.detach and opts.tty:
        raise RunError("-d with -t is not supported: attach is not implemented")
    if opts.tty and (opts.stdout is not None or opts.stderr is not None):
        raise RunError("a terminal is the command's stdout and stderr: not with stdout/stderr")
    layers = LayerStore(store)
    diff_ids = layers.unpack(image)
    containers = Containers(store.root_str)
    containers.reap_stale()
    extra: dict[str, object] = {"layers": diff_ids}  # gc keeps what a container stands on
    if ports:
        extra["ports"] = [p.as_dict() for p in ports]
    rec = containers.create(opts.name, image.name, image.digest, argv, opts.rm, opts.detach, extra)
    cdir = containers.dir_str(rec.id)
    hostname = opts.hostname or rec.short_id
    spec = SandboxSpec(
        argv=argv,
        lower_dirs=_lower_dirs(layers, diff_ids),
        layers_dir=layers.root_str,
        upper_dir=os.path.join(cdir, "upper"),
        work_dir=os.path.join(cdir, "work"),
        rootfs=os.path.join(cdir, "rootfs"),
        env=env_for(config, opts, hostname),
        cwd=opts.workdir or config.get("WorkingDir") or "/",
        user=opts.user if opts.user is not None else (config.get("User") or ""),
        hostname=hostname,
        network=opts.network,
        mounts=mounts,
        etc_files=_etc_files(cdir, hostname, opts.network),
        limits=opts.limits,
        tty=opts.tty,
        stdin=opts.interactive or opts.tty,
        stdout=opts.stdout,
        stderr=opts.stderr,
        init=opts.init,
        readonly_rootfs=opts.read_only,
        volatile=opts.rm,  # its upper dir goes with it
        seccomp=seccomp,
        caps=caps,
        devices=nodes,
        device_rules=rules,
        privileged=opts.privileged,
    )
    return rec, spec


def _lower_dirs(layers: LayerStore, keys: list[str]) -> list[str]:
    """The overlay's lower dirs, relative to the layers' root, lowest first: the image's layers
    and, where it fits them, the store's layer of mount points (sandbox/mountpoints.py), so
    that the set-up writes nothing into the container's upper dir to mount onto."""
    lowers = [layers.lower_name(k) for k in keys]
    if not keys:  # FROM scratch: the upper dir is bound as the root, no overlay
        return lowers
    try:
        ours = mountpoints.layer(layers.root_str)
        if mountpoints.fits([layers.diff_dir_str(k) for k in keys], ours):
            lowers.append(mountpoints.NAME)
    except OSError:
        pass  # then the set-up makes the mount points in the upper dir, as without the layer
    return lowers


def _seccomp_filter(options: list[str], privileged: bool, caps: tuple[str, ...]) -> bytes | None:
    """Docker's --security-opt, as far as imgtool has them: the filter to install (the default
    profile's is compiled by the runner), or None for unconfined."""
    wanted: bytes | None = None if privileged else DEFAULT_SECCOMP
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep and ":" in opt:  # the old docker spelling seccomp:unconfined
            key, _, value = opt.partition(":")
        if key == "seccomp" and value == "unconfined":
            wanted = None
        elif key == "seccomp" and value:
            from imgtool.sandbox import seccomp  # the compiler: only for a profile of one's own

            wanted = seccomp.compile_filter(seccomp.load_profile(value), caps)
        elif key in ("no-new-privileges", "no_new_privs") and value in ("", "true"):
            pass  # always on
        else:
            raise RunError(
                f"--security-opt {opt}: unsupported (seccomp=unconfined, seccomp=PROFILE.json "
                "and no-new-privileges are)"
            )
    return wanted


def _capabilities(opts: RunOptions) -> tuple[str, ...]:
    if opts.privileged:
        return tuple(sorted(CAP_NUMBERS, key=CAP_NUMBERS.__getitem__))
    try:
        return resolve_caps(opts.cap_add, opts.cap_drop)
    except ValueError as e:
        raise RunError(str(e)) from None


def _devices(opts: RunOptions) -> tuple[list[DeviceNode], tuple | None]:
    """The device nodes to make in /dev and the device cgroup's rules (None: no restriction)."""
    from imgtool.sandbox import devices

    if opts.privileged:
        return host_device_nodes(), None
    try:
        mapped = [devices.parse_device(text) for text in opts.devices]
    except ValueError as e:
        raise RunError(str(e)) from None
    nodes = [
        DeviceNode(m.container_path, m.kind, m.major, m.minor, m.mode, m.uid, m.gid) for m in mapped
    ]
    return nodes, tuple(devices.DEFAULT_RULES) + tuple(m.rule() for m in mapped)


def host_device_nodes() -> list[DeviceNode]:
    """Every device node of the host's /dev, as Docker's --privileged gives them (not those
    of the file systems the container mounts there itself)."""
    nodes, todo = [], ["/dev"]
    while todo:
        d = todo.pop()
        with contextlib.suppress(OSError), os.scandir(d) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if entry.path not in ("/dev/pts", "/dev/shm", "/dev/mqueue"):
                        todo.append(entry.path)
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
                    nodes.append(
                        DeviceNode(
                            entry.path,
                            kind,
                            os.major(st.st_rdev),
                            os.minor(st.st_rdev),
                            stat.S_IMODE(st.st_mode),
                            st.st_uid,
                            st.st_gid,
                        )
                    )
    return sorted(nodes, key=lambda n: n.path)


def _ports(opts: RunOptions, config: dict, store: Store) -> list:
    if not (opts.publish or opts.publish_all):
        return []
    from imgtool.network import nat

    containers = Containers(store.root_str)
    taken = {
        (p["host_port"], p["proto"]): r.name
        for r in containers.list()
        if containers.is_running(r)
        for p in r.extra.get("ports", [])
    }
    ports = [p for text in opts.publish for p in nat.parse_publish(text)]
    if opts.publish_all:
        for exposed in config.get("ExposedPorts") or {}:
            port, _, proto = exposed.partition("/")
            ports += nat.parse_publish(f"{port}/{proto or 'tcp'}")
    for p in ports:
        if (p.host_port, p.proto) in taken:
            raise RunError(
                f"port {p.host_port}/{p.proto} is already published by container "
                f"{taken[(p.host_port, p.proto)]}"
            )
        nat.check_free(p)
    return ports


def _attach_network(rec: Record, spec: SandboxSpec) -> None:
    """Bridge networking: an address, a namespace wired to imgtool0, published ports, and
    /etc/hosts entries both ways with the other containers on the bridge."""
    from imgtool.network import ipam, links, nat

    net = ipam.subnet()
    gw = ipam.gateway(net)
    hosts = spec.etc_files["/etc/hosts"]
    address = ipam.Ipam().allocate(rec.id, rec.name, spec.hostname, hosts)
    rec.extra["address"] = str(address)
    with links.setup_lock():  # the bridge and the table are the host's: one maker at a time
        links.ensure_bridge(net, gw)
        nat.ensure_table(net)
    spec.netns = links.create(rec.id, address, net, gw)
    ports = [nat.Port(**p) for p in rec.extra.get("ports", [])]
    nat.publish(rec.id, address, ports)


def _detach_network(rec: Record) -> None:
    from imgtool.network import ipam, links, nat

    if rec.extra.get("ports"):
        with contextlib.suppress(ImgtoolError, OSError):
            nat.unpublish(rec.id)
    with contextlib.suppress(Exception):
        links.remove(rec.id)
    with contextlib.suppress(OSError):
        ipam.Ipam().free(rec.id)


def execute(
    store: Store, rec: Record, spec: SandboxSpec, started: Callable[[int], None] | None = None
) -> runner.Outcome:
    """Run a prepared container to its end, record how it ended, clean up."""
    containers = Containers(store.root_str)
    cgroup = Cgroup(rec.id, spec.limits, devices=spec.device_rules)

    def on_start(pid: int) -> None:
        rec.status, rec.pid, rec.pid_start = "running", pid, proc_start_time(pid)
        containers.save(rec)
        if started:
            started(pid)

    # from here on the container has host-wide things (a cgroup, a namespace, an address):
    # every imgtool on the host must see it alive until they are gone and its end is recorded
    liveness.hold(rec.id)
    try:
        try:
            cgroup.create()
            if spec.network == "bridge":
                _attach_network(rec, spec)
                containers.save(rec)
            outcome = runner.run(spec, rec.id, on_start, cgroup)
        except SandboxError as e:
            rec.status, rec.exit_code, rec.finished = "exited", _status_of(e), time.time()
            containers.save(rec)
            raise _explain(e, spec) from None
        finally:
            cgroup.destroy()
            if spec.network == "bridge":
                _detach_network(rec)
            if rec.auto_remove:
                containers.remove(rec)
        rec.status, rec.exit_code, rec.finished = "exited", outcome.status, time.time()
        rec.oom_killed = outcome.oom_killed
        if not rec.auto_remove:
            containers.save(rec)
        return outcome
    finally:
        liveness.release(rec.id)


def _status_of(e: SandboxError) -> int:
    if e.step == "exec":
        return runner.EXIT_NOT_FOUND if e.errno == 2 else runner.EXIT_CANNOT_EXECUTE
    return runner.EXIT_SETUP_FAILED


def _explain(e: SandboxError, spec: SandboxSpec) -> RunError:
    if e.step == "exec" and e.errno == 2:
        return RunError(
            f"exec: {spec.argv[0]!r}: executable file not found in $PATH (in the image)",
            runner.EXIT_NOT_FOUND,
        )
    if e.step == "exec":
        return RunError(
            f"exec: {spec.argv[0]!r}: {os.strerror(e.errno)}", runner.EXIT_CANNOT_EXECUTE
        )
    if "overlay" in e.step and e.errno == 19:
        return RunError("this kernel has no overlayfs (modprobe overlay)")
    return RunError(f"container set-up failed: {e}")


def start_detached(store: Store, rec: Record, spec: SandboxSpec) -> Record:
    """Start under a monitor process that outlives this one, logs the output and records the
    exit. Returns once the command has started (or raises why it did not)."""
    r, w = os.pipe()
    log = os.path.join(Containers(store.root_str).dir_str(rec.id), "ctr.log")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _monitor(store, rec, spec, w, log)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    os.waitpid(pid, 0)  # the first fork exits at once; the monitor is its child
    if not msg.startswith(b"ok"):
        text = msg.decode(errors="replace")
        status = int(text.split(":", 1)[0]) if text[:3].isdigit() else runner.EXIT_SETUP_FAILED
        raise RunError(text.split(":", 1)[-1] or "the container did not start", status)
    return Containers(store.root_str).load(rec.id) if not rec.auto_remove else rec


def _monitor(store: Store, rec: Record, spec: SandboxSpec, w: int, log: str) -> None:
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        containers = Containers(store.root_str)
        rec.monitor_pid = os.getpid()
        containers.save(rec)

        def started(_: int) -> None:
            os.write(w, b"ok")
            os.close(w)

        try:
            execute(store, rec, spec, started)
        except RunError as e:
            with contextlib.suppress(OSError):
                os.write(w, f"{e.status}:{e}".encode())
    except BaseException as e:  # noqa: BLE001
        with contextlib.suppress(OSError):
            os.write(w, f"125:{e}".encode())
    os._exit(0)


def stop(store: Store, key: str, timeout: float = 10.0) -> Record:
    containers = Containers(store.root_str)
    rec = containers.find(key)
    if not containers.is_running(rec):
        return rec
    sig = signal.SIGTERM
    with contextlib.suppress(ImgtoolError, KeyError, ValueError, AttributeError):
        name = store.image(rec.image).config.config.get("StopSignal") or "SIGTERM"
        sig = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    os.kill(rec.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(rec.pid, rec.pid_start):
        time.sleep(0.05)
    if alive(rec.pid, rec.pid_start):
        os.kill(rec.pid, signal.SIGKILL)
    _wait_for_monitor(rec)
    return containers.load(rec.id) if os.path.exists(containers.dir_str(rec.id)) else rec


def remove(store: Store, key: str, force: bool = False) -> Record:
    containers = Containers(store.root_str)
    rec = containers.find(key)
    if containers.is_running(rec):
        if not force:
            raise ImgtoolError(f"container {rec.name} is running: stop it first or use -f")
        os.kill(rec.pid, signal.SIGKILL)
    _wait_for_monitor(rec)
    containers.remove(rec)
    return rec


def _wait_for_monitor(rec: Record, timeout: float = 10.0) -> None:
    """Until the imgtool that ran the container has taken down its network, cgroup and
    record and let go of its liveness lock: `stop` and `rm` return with all of it gone."""
    deadline = time.monotonic() + timeout
    while liveness.held(rec.id) and time.monotonic() < deadline:
        time.sleep(0.02)
