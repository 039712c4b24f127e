"""The parent side of a sandbox: fork, cgroups, signals, the terminal, the exit status.

    imgtool (P) --fork--> A: unshare(CLONE_NEWPID), fork --> B: PID 1 of the container
                                                             set-up steps, then exec

A exists so that the caller's own PID namespace for children is never changed (the builder
runs many steps from one process). B moves itself into the container's cgroup before it does
anything else (Cgroup.join: a thread's own move is 10 ms cheaper than A moving it on cgroup v1);
A reports B's host PID and, at the end, B's wait status. Each of A and B dies with its
parent (PR_SET_PDEATHSIG), so a SIGKILL of imgtool takes the container with it; the mount
namespace, and with it the overlay mount, goes with the container's last process.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import struct
import sys
from collections.abc import Callable

from imgtool.errors import SandboxError
from imgtool.sandbox import container, linux
from imgtool.sandbox.cgroups import Cgroup
from imgtool.sandbox.spec import DEFAULT_SECCOMP, SandboxSpec
from imgtool.values import Frozen

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
EXIT_SETUP_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class Outcome(Frozen):
    __slots__ = ("status", "signal", "oom_killed")
    status: int  # as docker reports it: the exit code, or 128 + the signal
    signal: int
    oom_killed: bool

    def __init__(self, status: int, signal: int = 0, oom_killed: bool = False) -> None:
        self._init(status, signal, oom_killed)


def _report(fd: int, e: BaseException) -> int:
    if isinstance(e, SandboxError):
        msg = f"{e.step}\0{e.path}\0{e.errno}\0{e}"
        code = EXIT_SETUP_FAILED
        if e.step == "exec":
            code = EXIT_NOT_FOUND if e.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
    else:
        msg = f"internal\0\0{getattr(e, 'errno', 0) or 0}\0{type(e).__name__}: {e}"
        code = EXIT_SETUP_FAILED
    with contextlib.suppress(OSError):
        os.write(fd, msg.encode()[:4000])
    return code


def _terminal_size() -> bytes | None:
    """Our terminal's size (stdin's, else stdout's or stderr's), as TIOCGWINSZ gives it."""
    import fcntl
    import termios  # loaded by run() before the fork: there is no Python in the container

    for fd in (0, 1, 2):
        if os.isatty(fd):
            return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    return None


def _attach_console(console: int, winsize: bytes | None) -> None:
    """Make a terminal from the container's own devpts (so that ttyname() works inside), make
    it B's controlling terminal and stdio, and send its master to imgtool, as runc's console
    socket does."""
    master, slave = os.openpty()  # /dev/ptmx is the container's: pts/ptmx of its devpts
    if winsize is not None:  # sized before the command starts: it may ask at once
        import fcntl
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize)
    import socket  # already loaded by run(): the container's root has no Python to load from

    sock = socket.socket(fileno=console)
    try:
        socket.send_fds(sock, [b"t"], [master])
    finally:
        sock.close()
        os.close(master)
    linux.set_controlling_tty(slave)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _exit_if_orphaned(life_r: int) -> None:
    """A's end of the life pipe closes when A dies: once PR_SET_PDEATHSIG is armed, a death
    before that moment would go unnoticed otherwise (B is PID 1: getppid() says nothing).
    `life_r` is non-blocking: EOF is A gone, EAGAIN is A alive (it never writes)."""
    try:
        gone = os.read(life_r, 1) == b""
    except BlockingIOError:
        gone = False
    if gone:
        os._exit(EXIT_SETUP_FAILED)


def _container_main(
    spec: SandboxSpec,
    cgroup: Cgroup | None,
    go_r: int,
    life_r: int,
    err_w: int,
    console: int | None,
) -> None:
    """B: join the cgroup, set up, exec. Never returns."""
    code = EXIT_SETUP_FAILED
    try:
        for sig in FORWARDED:  # A ignores them; the command gets them as it would anywhere
            signal.signal(sig, signal.SIG_DFL)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        _exit_if_orphaned(life_r)
        if cgroup is not None:  # first: nothing of the container's runs outside it
            cgroup.join()
        os.read(go_r, 1)
        os.close(go_r)
        if console is None and not spec.stdin:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        _close_fds_except({err_w, life_r} | ({console} if console is not None else set()))
        container.unshare_namespaces(spec)
        for step in container.SETUP_STEPS:
            step(spec)
        if console is not None:
            _attach_console(console, _terminal_size())
        container.capabilities_and_user(spec)  # arms PR_SET_PDEATHSIG again
        _exit_if_orphaned(life_r)
        os.close(life_r)
        container.chdir_workdir(spec)
        path = container.find_executable(spec.argv[0], spec.env)
        if spec.init:
            pid = os.fork()
            if pid == 0:
                _exec(path, spec)
            os.close(err_w)
            container.run_init(pid)
        _exec(path, spec)
    except BaseException as e:  # noqa: BLE001 - whatever happens, report it and leave
        code = _report(err_w, e)
    os._exit(code)


def _close_fds_except(keep: set[int]) -> None:
    """Nothing of imgtool's may leak into the container (or keep a caller's pipe open)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _exec(path: str, spec: SandboxSpec) -> None:
    try:
        os.execve(path, spec.argv, spec.env)
    except OSError as e:
        raise SandboxError("exec", spec.argv[0], e.errno or 0) from None


def _relay_main(
    spec: SandboxSpec,
    cgroup: Cgroup | None,
    owner: int,
    err_w: int,
    stat_w: int,
    console: int | None,
) -> None:
    """A: new PID namespace for its child, cgroup, then wait and report. Never returns."""
    try:
        for sig in FORWARDED:  # P forwards to B itself; A just stays alive
            signal.signal(sig, signal.SIG_IGN)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != owner:  # imgtool died before the signal was armed
            os._exit(EXIT_SETUP_FAILED)
        _redirect_output(spec.stdout, spec.stderr)  # before any fd beyond 2 is closed
        _close_fds_except({err_w, stat_w} | ({console} if console is not None else set()))
        linux.unshare(linux.CLONE_NEWPID)
        go_r, go_w = os.pipe()
        # held open by A, never written: closed when A dies (non-blocking: B polls it)
        life_r, life_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(stat_w)
            os.close(life_w)
            _container_main(spec, cgroup, go_r, life_r, err_w, console)
        os.close(go_r)
        os.close(life_r)
        if console is not None:
            os.close(console)
        os.close(err_w)  # B reports its own failures (a cgroup it cannot join too)
        os.write(stat_w, struct.pack("q", pid))
        os.write(go_w, b"g")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
        os.write(stat_w, struct.pack("q", status))
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        _report(err_w, e)
        os._exit(EXIT_SETUP_FAILED)


def _redirect_output(stdout: int | None, stderr: int | None) -> None:
    """Make the caller's descriptors fds 1 and 2 (B inherits them). Copies first: stdout=2
    with stderr=1 swaps them rather than making both one."""
    copies = {target: os.dup(fd) for target, fd in ((1, stdout), (2, stderr)) if fd is not None}
    for target, copy in copies.items():
        os.dup2(copy, target)
        os.close(copy)


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        try:
            chunk = os.read(fd, n - len(out))
        except InterruptedError:
            continue
        if not chunk:
            break
        out += chunk
    return out


def _decode_error(raw: bytes) -> SandboxError:
    step, path, err, text = (raw.decode(errors="replace").split("\0") + ["", "", "0", ""])[:4]
    e = SandboxError(step, path, int(err or 0))
    e.args = (text,)
    return e


def run(
    spec: SandboxSpec,
    cid: str,
    on_start: Callable[[int], None] | None = None,
    cgroup: Cgroup | None = None,
) -> Outcome:
    """Run the sandbox to its end. Raises SandboxError when the set-up failed (exec failures
    included: `.errno` ENOENT for a command not found). Completes `spec` first: the default
    seccomp filter compiled for its capabilities, the cgroup hierarchies it will see."""
    if spec.seccomp == DEFAULT_SECCOMP:  # `imgtool run` brings it compiled (seccomp_cache)
        from imgtool.sandbox import seccomp

        spec.seccomp = seccomp.compile_filter(seccomp.default_profile(), spec.caps)
    if cgroup is not None:
        spec.cgroup_hierarchies = cgroup.hierarchies()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    stat_r, stat_w = os.pipe2(os.O_CLOEXEC)
    master = None
    ours = theirs = None
    if spec.tty:  # the container makes its terminal and sends us the master end
        import socket
        import termios  # noqa: F401 - loaded for the container: after pivot_root it cannot

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    # the children never collect: a collection would touch, and so copy, the whole heap
    gc.freeze()
    owner = os.getpid()
    forward = _Forwarder()  # before the fork: no moment where a SIGTERM would kill imgtool
    try:
        relay = os.fork()
    except BaseException:
        forward.restore()
        raise
    if relay == 0:
        gc.disable()
        os.close(err_r)
        os.close(stat_r)
        _relay_main(spec, cgroup, owner, err_w, stat_w, theirs.fileno() if theirs else None)
    os.close(err_w)
    os.close(stat_w)
    if theirs is not None:
        theirs.close()
    try:
        raw_pid = _read_exact(stat_r, 8)
        pid = struct.unpack("q", raw_pid)[0] if len(raw_pid) == 8 else 0
        if pid:
            forward.started(pid)
        failure = _read_until_exec(err_r, master)
        if failure:
            os.waitpid(relay, 0)
            raise _decode_error(failure)
        if on_start and pid:
            on_start(pid)
        if ours is not None:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
            ours.close()
            if not fds:
                raise SandboxError("console", detail="the container sent no terminal")
            master = fds[0]
            _pump_terminal(master, pid)
        os.waitpid(relay, 0)
        raw = _read_exact(stat_r, 8)
    finally:
        forward.restore()
        for fd in (err_r, stat_r, master):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
    if len(raw) != 8:
        raise SandboxError("wait", detail="the container's monitor died")
    status = struct.unpack("q", raw)[0]
    oom = cgroup.oom_kills() > 0 if cgroup is not None else False
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return Outcome(128 + sig, sig, oom and sig == signal.SIGKILL)
    return Outcome(os.WEXITSTATUS(status), 0, oom)


def _read_until_exec(err_r: int, master: int | None) -> bytes:
    """The error pipe closes on exec: EOF with nothing read means the command started.
    A terminal's output is read meanwhile, so that a chatty set-up cannot block on it."""
    out = b""
    while True:
        try:
            chunk = os.read(err_r, 4096)
        except InterruptedError:
            continue
        if not chunk:
            return out
        out += chunk


class _Forwarder:
    """Signals sent to imgtool go to the container's PID 1, as with docker run. The handlers
    are installed before the first fork: a signal that comes before the container's PID is
    known waits in `queued` and is sent once it is (without them it would kill imgtool)."""

    def __init__(self) -> None:
        self.pid = 0
        self.queued: list[int] = []
        self.saved: dict[int, object] = {}
        try:
            for sig in FORWARDED:
                self.saved[sig] = signal.signal(sig, self._forward)
        except ValueError:  # not the main thread (a library caller's): its handlers stay
            self.restore()
            self.saved = {}

    def _forward(self, sig: int, _: object) -> None:
        if not self.pid:
            self.queued.append(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def started(self, pid: int) -> None:
        """The container's PID is known: send it what came meanwhile, in order."""
        self.pid = pid
        queued, self.queued = self.queued, []
        for sig in queued:
            self._forward(sig, None)

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _pump_terminal(master: int, pid: int) -> None:
    """Copy between our terminal and the container's pty in raw mode; follow window size."""
    import select
    import termios
    import tty

    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None

    sized = next((fd for fd in (stdin, stdout, sys.stderr.fileno()) if os.isatty(fd)), None)

    def resize(*_: object) -> None:
        """The container's terminal takes the size of ours (stdin's, else stdout's)."""
        if sized is not None:
            import fcntl

            size = fcntl.ioctl(sized, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)

    resize()
    old_winch = signal.signal(signal.SIGWINCH, resize)
    try:
        if interactive:
            tty.setraw(stdin)
        fds = [master, stdin]
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the container's side is closed
                    break
                if not data:
                    break
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    fds.remove(stdin)
                else:
                    os.write(master, data)
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
