"""Tar archives of images (`docker save`, OCI layouts in a tar), read and written in place.

Reading never extracts: the headers alone make an index of members (name -> offset and size),
and a member is read with pread(2) at its offset, so no path from the archive ever reaches the
filesystem and several threads may read at once. A name that climbs out of the archive
(absolute, `..`) or appears twice refuses the whole archive; a member that is a link (symbolic
or hard) or sparse is never followed: asked for by name, it is refused. Headers larger than
`MAX_HEADER_BYTES` (PAX records, GNU long names) and archives of more than `MAX_MEMBERS`
members are refused before they are read into memory.

Writing streams members in order (512-byte GNU headers, so a header can be rewritten in place):
a member whose size is known only once written has its header patched when the output can
seek. Output files appear whole or not at all (temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imgtool import atomic
from imgtool.errors import SpecError

BLOCK = 512
RECORD = 20 * BLOCK  # what tar writers pad the archive to
MAX_MEMBERS = 100_000
MAX_HEADER_BYTES = 1 << 20  # a PAX record or long name bigger than this is no image archive
CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    name: str  # cleaned: no leading "./", no empty components
    kind: str  # "file", "dir", "symlink", "hardlink", "sparse" or "other"
    offset: int  # of the data in the archive
    size: int


def clean_name(raw: str, label: str) -> str:
    """The member's name without `./` and empty components; refused when it is absolute or
    climbs with `..` (no image archive has such names: only an attack does)."""
    if raw.startswith("/"):
        raise SpecError(f"{label}: member {raw!r} has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SpecError(f"{label}: member {raw!r} climbs out of the archive ('..')")
    return "/".join(parts)


def _kind(info: tarfile.TarInfo) -> str:
    if info.issparse():
        return "sparse"
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


class _BoundedReads:
    """The archive file as tarfile sees it while indexing: a read bigger than a header could
    be (a hostile PAX record of gigabytes) is refused instead of filling memory."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self._f = f
        self._label = label

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > MAX_HEADER_BYTES:
            raise SpecError(f"{self._label}: a tar header of {n} bytes is over the limit")
        return self._f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


class TarReader:
    """An archive file opened for reading members by name. Close it (or use `with`)."""

    def __init__(self, path: Path | str, label: str) -> None:
        self.label = label
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - held until close()
        except OSError as e:
            raise SpecError(f"{label}: cannot open: {e.strerror}") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.members = self._index()
        except BaseException:
            self._file.close()
            raise

    def _index(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        try:
            bounded = _BoundedReads(self._file, self.label)
            with tarfile.open(fileobj=bounded, mode="r:") as tar:  # type: ignore[call-overload]
                for count, info in enumerate(tar, 1):
                    if count > MAX_MEMBERS:
                        raise SpecError(f"{self.label}: more than {MAX_MEMBERS} members")
                    self._add(members, info)
        except tarfile.TarError as e:
            raise SpecError(f"{self.label}: not a readable tar archive ({e})") from None
        return members

    def _add(self, members: dict[str, Member], info: tarfile.TarInfo) -> None:
        name = clean_name(info.name, self.label)
        if info.size < 0:
            raise SpecError(f"{self.label}: member {name} has a negative size")
        if not name:
            return  # the archive's own root directory ("./")
        m = Member(name, _kind(info), info.offset_data, info.size if info.isreg() else 0)
        if m.offset + m.size > self.size:
            raise SpecError(f"{self.label}: truncated (member {name} ends past the end)")
        old = members.get(name)
        if old is not None and not (old.kind == m.kind == "dir"):
            raise SpecError(f"{self.label}: member {name} appears twice")
        members[name] = m

    def has(self, name: str) -> bool:
        m = self.members.get(name)
        return m is not None and m.kind == "file"

    def member(self, name: str, what: str = "") -> Member:
        """The regular file `name`; a link is refused, never followed."""
        m = self.members.get(name)
        about = f" ({what})" if what else ""
        if m is None:
            raise SpecError(f"{self.label}: {name}{about} is not in the archive")
        if m.kind in ("symlink", "hardlink"):
            raise SpecError(f"{self.label}: {name}{about} is a {m.kind}; links are not followed")
        if m.kind != "file":
            raise SpecError(f"{self.label}: {name}{about} is not a regular file ({m.kind})")
        return m

    def open(self, name: str, what: str = "") -> MemberReader:
        m = self.member(name, what)
        return MemberReader(self._file.fileno(), m, self.label)

    def read(self, name: str, limit: int, what: str = "") -> bytes:
        """A small member whole, refused from its header when it is over `limit` bytes."""
        m = self.member(name, what)
        if m.size > limit:
            raise SpecError(
                f"{self.label}: {name} is {m.size} bytes, over the {limit >> 20} MiB limit"
            )
        with MemberReader(self._file.fileno(), m, self.label) as r:
            return r.read()

    def head(self, name: str, n: int) -> bytes:
        """The first `n` bytes of a member (to sniff its compression)."""
        m = self.member(name)
        return os.pread(self._file.fileno(), min(n, m.size), m.offset)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TarReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemberReader:
    """One member's bytes, read with pread: independent of every other reader of the archive.
    `len()` is what is left, so HTTP clients send it with a Content-Length."""

    def __init__(self, fd: int, member: Member, label: str) -> None:
        self._fd = fd
        self._member = member
        self._label = label
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        left = self._member.size - self._pos
        want = left if n is None or n < 0 else min(n, left)
        out = bytearray()
        while len(out) < want:
            got = os.pread(self._fd, want - len(out), self._member.offset + self._pos + len(out))
            if not got:
                raise SpecError(f"{self._label}: truncated in member {self._member.name}")
            out += got
        self._pos += len(out)
        return bytes(out)

    def __len__(self) -> int:
        return self._member.size - self._pos

    def close(self) -> None:
        pass  # the archive owns the descriptor

    def __enter__(self) -> MemberReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- writing -------------------------------------------------------------------------------


def _header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0  # the same image always gives the same archive
    info.uname = info.gname = ""
    # GNU headers are one block whatever the size (base-256 past 8 GiB) as long as the name
    # fits in 100 bytes, which blobs/sha256/<hex> does: the header can be rewritten in place
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


class TarWriter:
    """Members written one after another to `out`; `seekable` allows `add_unsized`."""

    def __init__(self, out: BinaryIO, seekable: bool) -> None:
        self._out = out
        self.seekable = seekable
        self.written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.written += len(data)

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self._write(b"\0" * (BLOCK - size % BLOCK))

    def add_dir(self, name: str) -> None:
        self._write(_header(name.rstrip("/") + "/", 0, directory=True))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._write(_header(name, len(data)))
        self._write(data)
        self._pad(len(data))

    def add_stream(
        self, name: str, size: int, fill: Callable[[Callable[[bytes], None]], None]
    ) -> None:
        """A member of known size whose bytes `fill` writes through the function it is given;
        writing more or fewer than `size` bytes is an error."""
        self._write(_header(name, size))
        start = self.written
        fill(self._write)
        got = self.written - start
        if got != size:
            raise SpecError(f"{name}: {got} bytes written where {size} were announced")
        self._pad(size)

    def add_unsized(self, name: str, fill: Callable[[Callable[[bytes], None]], None]) -> int:
        """A member whose size is known once `fill` is done: the header is written with size 0
        and rewritten after. Needs a seekable output. Returns the size."""
        if not self.seekable:
            raise SpecError(f"{name}: its size is not known and the output cannot seek")
        at = self._out.tell()
        header = _header(name, 0)
        self._write(header)
        start = self.written
        fill(self._write)
        size = self.written - start
        end = self._out.tell()
        self._out.seek(at)
        patched = _header(name, size)
        if len(patched) != len(header):
            raise SpecError(f"{name}: name too long for a header rewritten in place")
        self._out.write(patched)
        self._out.seek(end)
        self._pad(size)
        return size

    def finish(self) -> None:
        """The end-of-archive blocks, padded to a whole record as tar writers do."""
        self._write(b"\0" * (2 * BLOCK))
        if self.written % RECORD:
            self._write(b"\0" * (RECORD - self.written % RECORD))
        self._out.flush()


@contextlib.contextmanager
def output(path: str) -> Iterator[TarWriter]:
    """A tar written to `path` ("-" is standard output). A file appears only when the block
    ends without an error (a temporary file beside it is renamed); else nothing is left."""
    if path == "-":
        stream = sys.stdout.buffer
        writer = TarWriter(stream, _can_seek(stream))
        yield writer
        writer.finish()
        return
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(atomic.replacing(Path(path)))
        except OSError as e:
            raise SpecError(f"cannot write {path}: {e.strerror}") from None
        writer = TarWriter(f, True)
        yield writer
        writer.finish()


def _can_seek(stream: BinaryIO) -> bool:
    """A regular file not opened for appending (`>>` would put a rewritten header at the end)."""
    import fcntl

    try:
        if fcntl.fcntl(stream.fileno(), fcntl.F_GETFL) & os.O_APPEND:
            return False
        stream.seek(0, os.SEEK_CUR)
        return stream.seekable()
    except (OSError, ValueError):
        return False


def copy_stream(src: BinaryIO, write: Callable[[bytes], object]) -> int:
    n = 0
    while chunk := src.read(CHUNK):
        write(chunk)
        n += len(chunk)
    return n
