"""A per-layer index of tar headers (and content digests), read from the stream without
extracting, cached in the store by diff_id so that analysing an image twice reads no layer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from imgtool import whiteout
from imgtool.atomic import atomic_write
from imgtool.errors import LayerError
from imgtool.filetree import Entry, LayerTree
from imgtool.layer.tarstream import MAX_HEADER

INDEX_VERSION = 1
_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}

_SPECIAL = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class Header(tarfile.TarInfo):
    """tarfile reads a PAX or GNU long-name header whole into memory: refuse huge ones first
    (`tarfile.open(..., tarinfo=Header)`)."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _SPECIAL and self.size > MAX_HEADER:
            raise LayerError(f"tar header of {self.size} bytes (at most {MAX_HEADER})")
        return super()._proc_member(tarfile)  # type: ignore[misc]


@dataclass
class LayerIndex:
    diff_id: str
    uncompressed_size: int  # bytes of the tar stream
    members: list[Entry]

    def tree(self) -> LayerTree:
        return LayerTree.from_members(self.members)


class _Counting:
    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.count = 0
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.count += len(data)
        self.hash.update(data)
        return data


def read_index(src: BinaryIO, diff_id: str | None = None) -> LayerIndex:
    """Index an uncompressed layer stream; the diff_id is checked when given."""
    counting = _Counting(src)
    members: list[Entry] = []
    try:
        with tarfile.open(fileobj=counting, mode="r|", tarinfo=Header) as tar:  # type: ignore[call-overload]
            for m in tar:
                path = whiteout.clean(m.name)
                if not path:
                    continue
                kind = _KINDS.get(m.type, "other")
                digest = ""
                if kind == "file":
                    h = hashlib.sha256()
                    f = tar.extractfile(m)
                    while f is not None and (chunk := f.read(1 << 20)):
                        h.update(chunk)
                    digest = "sha256:" + h.hexdigest()
                members.append(
                    Entry(
                        path,
                        kind,
                        m.size if kind == "file" else 0,
                        m.mode,
                        m.uid,
                        m.gid,
                        m.linkname,
                        digest,
                    )
                )
    except tarfile.TarError as e:
        raise LayerError(f"invalid layer archive: {e}") from None
    while counting.read(1 << 20):
        pass  # the padding after the end-of-archive blocks counts in the size and the digest
    actual = "sha256:" + counting.hash.hexdigest()
    if diff_id is not None and actual != diff_id:
        raise LayerError(f"layer content does not match its diff_id {diff_id} (got {actual})")
    return LayerIndex(diff_id or actual, counting.count, members)


def _cache_path(cache_dir: Path, diff_id: str) -> Path:
    return cache_dir / f"{diff_id.split(':', 1)[1]}.json"


def load_cached(cache_dir: Path | None, diff_id: str) -> LayerIndex | None:
    if cache_dir is None:
        return None
    try:
        doc = json.loads(_cache_path(cache_dir, diff_id).read_text())
    except (OSError, ValueError):
        return None
    if doc.get("version") != INDEX_VERSION:
        return None
    members = [Entry(*m) for m in doc["members"]]
    return LayerIndex(doc["diff_id"], doc["uncompressed_size"], members)


def save_cached(cache_dir: Path | None, index: LayerIndex) -> None:
    if cache_dir is None:
        return
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "version": INDEX_VERSION,
            "diff_id": index.diff_id,
            "uncompressed_size": index.uncompressed_size,
            "members": [list(asdict(m).values()) for m in index.members],
        }
        atomic_write(
            _cache_path(cache_dir, index.diff_id),
            json.dumps(doc, separators=(",", ":")).encode(),
            durable=False,
        )


def writable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)
