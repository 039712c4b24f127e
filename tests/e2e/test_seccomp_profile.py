"""The compiled filters in the real kernel: a forked child installs one and makes the calls
directly (libc's syscall(), and int 0x80 for the i386 ABI on x86_64), before and after, and
reports what came back. No container: this is the filter alone."""

from __future__ import annotations

import builtins
import ctypes
import errno
import json
import mmap
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imgtool.sandbox import linux
from imgtool.sandbox import seccomp as sc
from imgtool.sandbox import seccomp_syscalls as tables
from imgtool.sandbox.spec import DEFAULT_CAPS

MACHINE = os.uname().machine
if MACHINE not in sc.NATIVE:
    pytest.skip(f"no seccomp table for {MACHINE}", allow_module_level=True)
if "Seccomp:" not in Path("/proc/self/status").read_text():
    pytest.skip("the kernel has no seccomp", allow_module_level=True)

TABLE = tables.X86_64 if MACHINE == "x86_64" else tables.AARCH64
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

AF_INET, AF_NETLINK, AF_ALG, AF_VSOCK = 2, 16, 38, 40
SOCK_STREAM, SOCK_RAW, SOCK_SEQPACKET = 1, 3, 5
NETLINK_AUDIT, KCMP_VM, ADDR_NO_RANDOMIZE = 9, 1, 0x0040000
CLONE_NEWUSER = 0x10000000


def call(name: str, *args: int) -> int:
    """The call's result, or -errno."""
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(TABLE[name]), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if ret == -1 else ret


def _int80() -> Callable[[int, int, int, int], int] | None:
    """A function making an i386 call through int 0x80 from this 64-bit process:
    push rbx; mov eax,edi; mov ebx,esi; xchg ecx,edx; int 0x80; pop rbx; ret."""
    if MACHINE != "x86_64":
        return None
    code = bytes.fromhex("53 89f8 89f3 87d1 cd80 5b c3")
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int)
    func = fn(address)
    func.page = page  # type: ignore[attr-defined]  # keep the mapping alive
    return func


def in_child(body: Callable[[], object]) -> tuple[object, int]:
    """Run `body` in a forked child; (what it returned, its wait status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result = json.dumps(body())
        except BaseException as e:  # reported to the parent
            result = json.dumps({"error": repr(e)})
        os.write(w, result.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    return (json.loads(raw) if raw else None), status


def confine(program: bytes) -> None:
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    sc.install(program)


def int80_works() -> bool:
    int80 = _int80()
    if int80 is None:
        return False
    result, status = in_child(lambda: int80(20, 0, 0, 0) == os.getpid())  # i386 getpid
    return os.WIFEXITED(status) and result is True


def hostile_calls(tmp: str) -> dict[str, int]:
    buf = ctypes.create_string_buffer(256)
    root_dev = os.stat("/").st_dev
    return {
        "getpid": call("getpid"),
        "kcmp": call("kcmp", os.getpid(), os.getpid(), KCMP_VM, 0, 0),
        "move_pages": call("move_pages", 0, 0, 0, 0, 0, 0),
        "personality": call("personality", ADDR_NO_RANDOMIZE),
        "personality_query": call("personality", 0xFFFFFFFF),
        "sysfs": call("sysfs", 3) if "sysfs" in TABLE else -errno.EPERM,
        "ustat": call("ustat", root_dev, ctypes.addressof(buf)) if "ustat" in TABLE else -1,
        "audit_socket": call("socket", AF_NETLINK, SOCK_RAW, NETLINK_AUDIT),
        # the kernel reads an int: high bits set must not slip past the rule
        "audit_socket_high": call("socket", AF_NETLINK, SOCK_RAW, NETLINK_AUDIT | 1 << 32),
        "alg_socket": call("socket", AF_ALG, SOCK_SEQPACKET, 0),
        "vsock_socket": call("socket", AF_VSOCK, SOCK_STREAM, 0),
        "inet_socket": call("socket", AF_INET, SOCK_STREAM, 0),
        "io_uring_setup": call("io_uring_setup", 1, ctypes.addressof(buf)),
        "clone3": call("clone3", 0, 0),
        "mount": _mount(tmp),
    }


def _mount(target: str) -> int:
    ctypes.set_errno(0)
    if _libc.mount(b"none", target.encode(), b"tmpfs", 0, None) == 0:
        return 0
    return -ctypes.get_errno()


def test_the_default_filter_in_the_kernel(tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    program = sc.compile_filter(sc.default_profile(), DEFAULT_CAPS)

    def body() -> dict[str, object]:
        before = {
            "kcmp": call("kcmp", os.getpid(), os.getpid(), KCMP_VM, 0, 0),
            "move_pages": call("move_pages", 0, 0, 0, 0, 0, 0),
            "personality": call("personality", ADDR_NO_RANDOMIZE),
            "sysfs": call("sysfs", 3) if "sysfs" in TABLE else None,
            "audit_socket": call("socket", AF_NETLINK, SOCK_RAW, NETLINK_AUDIT),
            "audit_socket_high": call("socket", AF_NETLINK, SOCK_RAW, NETLINK_AUDIT | 1 << 32),
        }
        call("personality", 0)
        confine(program)
        after = hostile_calls(str(target))
        after["unshare_user"] = call("unshare", CLONE_NEWUSER)
        if MACHINE == "x86_64":
            after["x32_getpid"] = call_raw(0x40000000 | TABLE["getpid"])
        return {"before": before, "after": after}

    result, status = in_child(body)
    assert os.WIFEXITED(status), status
    assert isinstance(result, dict) and "error" not in result, result
    before, after = result["before"], result["after"]
    # what the kernel itself lets root do here, which the filter must stop
    assert before["kcmp"] == 0 and before["move_pages"] == 0
    assert before["personality"] >= 0 and before["audit_socket"] >= 0
    assert before["audit_socket_high"] >= 0
    assert before["sysfs"] is None or before["sysfs"] > 0
    eperm = -errno.EPERM
    assert after["getpid"] > 0 and after["inet_socket"] >= 0
    assert after["personality_query"] >= 0
    for name in ("kcmp", "move_pages", "personality", "sysfs", "ustat", "alg_socket"):
        assert after[name] == eperm, (name, after[name])
    for name in ("vsock_socket", "io_uring_setup", "mount", "unshare_user"):
        assert after[name] == eperm, (name, after[name])
    assert after["audit_socket"] == after["audit_socket_high"] == -errno.EINVAL
    assert after["clone3"] == -errno.ENOSYS
    if MACHINE == "x86_64":
        assert after["x32_getpid"] == -errno.ENOSYS
    assert not os.path.ismount(target) and not any(target.iterdir())


def call_raw(nr: int) -> int:
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr))
    return -ctypes.get_errno() if ret == -1 else ret


@pytest.mark.skipif(MACHINE != "x86_64", reason="the i386 ABI is x86_64's")
def test_the_i386_abi_is_checked_by_its_own_numbers() -> None:
    if not int80_works():
        pytest.skip("this kernel runs no i386 calls (no IA32 emulation)")
    int80 = _int80()
    assert int80 is not None
    program = sc.compile_filter(sc.default_profile(), DEFAULT_CAPS)
    i386 = tables.I386

    def body() -> dict[str, dict[str, int]]:
        pid = os.getpid()
        before = {
            "kcmp": int80(i386["kcmp"], pid, pid, KCMP_VM),
            "personality": int80(i386["personality"], ADDR_NO_RANDOMIZE, 0, 0),
            "sysfs": int80(i386["sysfs"], 3, 0, 0),
        }
        int80(i386["personality"], 0, 0, 0)
        confine(program)
        after = {
            "getpid": int80(i386["getpid"], 0, 0, 0),
            "kcmp": int80(i386["kcmp"], pid, pid, KCMP_VM),
            "personality": int80(i386["personality"], ADDR_NO_RANDOMIZE, 0, 0),
            "sysfs": int80(i386["sysfs"], 3, 0, 0),
            "clone3": int80(i386["clone3"], 0, 0, 0),
        }
        return {"before": before, "after": after}

    result, status = in_child(body)
    assert os.WIFEXITED(status), status
    assert isinstance(result, dict) and "error" not in result, result
    assert result["before"]["kcmp"] == 0 and result["before"]["sysfs"] > 0
    assert result["before"]["personality"] >= 0
    after = result["after"]
    assert after["getpid"] > 0
    assert after["kcmp"] == after["personality"] == after["sysfs"] == -errno.EPERM
    assert after["clone3"] == -errno.ENOSYS


def test_a_user_profile_in_the_kernel(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77},
                    {
                        "names": ["getpriority"],
                        "action": "SCMP_ACT_ERRNO",
                        "errnoRet": 13,
                        "args": [{"index": 1, "value": 4242, "op": "SCMP_CMP_EQ"}],
                    },
                    {"names": ["getpgid"], "action": "SCMP_ACT_KILL_PROCESS"},
                ],
            }
        )
    )
    program = sc.compile_filter(sc.load_profile(str(profile)), DEFAULT_CAPS)

    def body() -> dict[str, int]:
        confine(program)
        return {
            "getppid": call("getppid"),
            "getpriority_4242": call("getpriority", 0, 4242),
            "getpriority_0": call("getpriority", 0, 0),
            "kcmp": call("kcmp", os.getpid(), os.getpid(), KCMP_VM, 0, 0),
        }

    result, status = in_child(body)
    assert os.WIFEXITED(status), status
    assert result == {"getppid": -77, "getpriority_4242": -13, "getpriority_0": 20, "kcmp": 0}

    def killed() -> int:
        confine(program)
        return call("getpgid", 0)

    result, status = in_child(killed)
    assert result is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_install_imports_nothing() -> None:
    """The child installs the filter after pivot_root, in a root that may have no Python."""
    program = sc.compile_filter(sc.default_profile(), DEFAULT_CAPS)

    def body() -> str:
        real_import = builtins.__import__

        def no_new_imports(name: str, *args: object, **kwargs: object) -> object:
            if name not in sys.modules:
                raise ImportError(f"imported {name} at install time")
            return real_import(name, *args, **kwargs)

        builtins.__import__ = no_new_imports
        sys.path[:] = []
        try:
            confine(program)
        finally:
            builtins.__import__ = real_import
        return "installed"

    result, status = in_child(body)
    assert os.WIFEXITED(status) and result == "installed", result


def test_a_program_the_kernel_refuses_is_a_sandbox_error() -> None:
    def body() -> str:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        try:
            sc.install(b"\x15\x00\x05\x00\x00\x00\x00\x00")  # jumps past its end
        except Exception as e:  # its type is the answer
            return f"{type(e).__name__}: {e}"
        return "installed"

    result, _ = in_child(body)
    assert result == "SandboxError: prctl(22): Invalid argument (errno 22)"
