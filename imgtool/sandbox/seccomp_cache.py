"""The default seccomp filter, compiled once and kept in the store: `run` reads one small file
instead of importing the compiler and compiling Docker's profile (most of 10 ms) every time.

The file's name is a hash of everything the program depends on: the profile and the compiler's
own source (so an upgrade or an edit of either compiles again), the machine (its ABIs), the
kernel release (minKernel rules) and the capability set (caps rules). The sources count by
their files' identity (device, inode, size, mtime and ctime in ns: five stat calls, not 64 kB
read and hashed on every run): an install or upgrade writes new files (new inodes), an edit
changes the times (and no one can set a ctime back).

A file is used only when it cannot have been written by anyone but us: it and the directories
above it up to the store's `cache/` are owned by our user and writable by no one else, it is a
regular file reached without following a symlink, and its header's size and SHA-256 match its
program. Anything else is compiled again and replaced, written atomically (a temporary file
renamed over it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from imgtool.atomic import read_private, write_private
from imgtool.digest import small_sha256 as sha256  # no OpenSSL to load for a small input

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from imgtool.atomic import StrPath

MAGIC = b"imgtool-seccomp-1\n"
BPF_MAX_INSNS = 4096  # the kernel's limit (seccomp_bpf.MAX_INSNS; a test keeps them equal)
_HERE = os.path.dirname(os.path.abspath(__file__))
# what the default program is made from: a change to any of them changes the key
COMPILER_FILES = (
    "seccomp_default.json",
    "seccomp.py",
    "seccomp_bpf.py",
    "seccomp_profile.py",
    "seccomp_syscalls.py",
)


def cache_key(caps: Iterable[str], machine: str, kernel_release: str) -> str:
    h = sha256()
    # a read-only file system (squashfs, erofs, composefs: an OS or snap image) gives each
    # version's files the inode numbers and times of its build: there the text is what counts
    by_text = bool(os.statvfs(_HERE).f_flag & os.ST_RDONLY)
    for name in COMPILER_FILES:
        path = os.path.join(_HERE, name)
        if by_text:
            with open(path, "rb") as f:
                data = f.read()
            h.update(f"{name}\0{len(data)}\0".encode())
            h.update(data)
            continue
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        h.update(f"{name}\0{ident}\0".encode())
    names = sorted({c.upper().removeprefix("CAP_") for c in caps})
    h.update(f"{machine}\0{kernel_release}\0{','.join(names)}".encode())
    return h.hexdigest()


def _decode(blob: bytes) -> bytes | None:
    """The program in a cache file, or None when its header does not vouch for it."""
    head = len(MAGIC) + 8 + 32
    if not blob.startswith(MAGIC) or len(blob) < head:
        return None
    size = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 8], "little")
    program = blob[head:]
    if size != len(program) or size % 8 or not 0 < size <= BPF_MAX_INSNS * 8:
        return None
    if sha256(program).digest() != blob[len(MAGIC) + 8 : head]:
        return None
    return program


def encode(program: bytes) -> bytes:
    return MAGIC + len(program).to_bytes(8, "little") + sha256(program).digest() + program


def read(cache_dir: StrPath, key: str) -> bytes | None:
    """The cached program under `key`, or None (missing, untrusted or damaged)."""
    blob = read_private(cache_dir, f"{key}.bpf", len(MAGIC) + 40 + BPF_MAX_INSNS * 8 + 1)
    return None if blob is None else _decode(blob)


def write(cache_dir: StrPath, key: str, program: bytes) -> None:
    """Keep `program` under `key`; a store we cannot write to just goes without a cache."""
    write_private(cache_dir, f"{key}.bpf", encode(program))


def default_filter(caps: Iterable[str], cache_dir: StrPath) -> bytes:
    """Docker's default profile compiled for a container with `caps` on this host, from the
    cache in `cache_dir` when it holds a program we can trust, else compiled and cached."""
    caps = tuple(caps)
    uname = os.uname()
    key = cache_key(caps, uname.machine, uname.release)
    program = read(cache_dir, key)
    if program is None:
        from imgtool.sandbox import seccomp  # the compiler: only on a miss

        program = seccomp.compile_filter(seccomp.default_profile(), caps)
        write(cache_dir, key, program)
    return program
