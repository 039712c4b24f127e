"""Unpacked layers: each layer once per chain of layers below it, in overlay format, in its own
directory keyed by ChainID (as containerd's and Docker's layer stores are).

    <store>/layers/sha256/<chain id hex>/diff    the layer's files (an overlay lower dir)
    <store>/layers/l/<short id> -> ../sha256/<hex>/diff
                                                 short names, so that an overlay mount's option
                                                 string (one page) can name hundreds of layers

A layer's overlay directory depends on the layers below it: a member written through a lower
layer's symlink, a whiteout reached through one, a parent directory the layer leaves out
(copied up with the lower one's owner and mode), a hard link to a lower file. So the key is
the ChainID (the bottom layer's diff_id, then sha256 of "<chain id below> <diff_id>"), never
the diff_id alone: an image that puts a popular layer on a base of its own making must not
decide what that layer's directory holds for every other image that uses it.

A layer is unpacked into a temporary directory while both the compressed digest and the
uncompressed diff_id are checked, and renamed into place only when both match; a refused layer
leaves nothing behind. Every image and container that uses a chain shares its directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import stat
from collections.abc import Callable, Iterator, Mapping

from imgtool import inroot
from imgtool import mediatypes as mt
from imgtool.errors import ImgtoolError, LayerError
from imgtool.layer import chains
from imgtool.layer.chains import chain_ids
from imgtool.store import Store, StoredImage, as_path
from imgtool.verify import VerifyingReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (nor threading)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Protocol

    from imgtool.layer.arriving import Arrival

    class _PackedStream(Protocol):
        def read(self, n: int = -1, /) -> bytes: ...
        def drain(self) -> None: ...


__all__ = ["LayerStore", "chain_ids"]


def _rmtree(path: str | os.PathLike[str], ignore_errors: bool = False) -> None:
    """rm -rf of a layer's tree: it can be deeper than Python's stack (shutil.rmtree
    recurses), and is removed without following its symlinks."""
    try:
        inroot.remove_tree(path)
    except OSError:
        if not ignore_errors:
            raise


class LayerStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        # strings (os.path) where `run` and a re-pull look: see store.as_path
        self.root_str = chains.layers_root(store.root_str)

    @property
    def root(self) -> Path:
        return as_path(self.root_str)

    def path(self, key: str) -> Path:
        return as_path(chains.chain_dir(self.root_str, key))

    def diff_dir(self, key: str) -> Path:
        return as_path(self.diff_dir_str(key))

    def diff_dir_str(self, key: str) -> str:
        return chains.diff_dir(self.root_str, key)

    def short_name(self, key: str) -> str:
        return chains.short_name(key)

    def lower_name(self, key: str) -> str:
        """The layer's overlay lower dir, relative to the root: its short link, unless a
        layer whose key begins the same took it first (12 hex digits, 48 bits, are within a
        search's reach: an image made so would be mounted in another's place), then its
        directory's own path."""
        own = f"sha256/{key.split(':', 1)[1]}/diff"
        short = f"l/{self.short_name(key)}"
        with contextlib.suppress(OSError):
            if os.readlink(os.path.join(self.root_str, short)) == f"../{own}":
                return short
        return own

    def has(self, key: str) -> bool:
        return os.path.isdir(self.diff_dir_str(key))

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{self.short_name(key)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def unpack(self, image: StoredImage) -> list[str]:
        """Unpack every layer of the image that is not unpacked yet; returns the layers' keys
        (ChainIDs, for `diff_dir` and `short_name`), lowest layer first."""
        manifest, config = image.manifest, image.config
        diff_ids = config.diff_ids
        if len(diff_ids) != len(manifest.layers):
            raise LayerError(
                f"{image.name}: the config names {len(diff_ids)} layers, the manifest "
                f"{len(manifest.layers)}"
            )
        return self.unpack_layers(
            [
                (d.digest, d.size, d.media_type, diff_id)
                for d, diff_id in zip(manifest.layers, diff_ids, strict=True)
            ]
        )

    def unpack_layers(
        self,
        layers: list[tuple[str, int, str, str]],
        arriving: Mapping[str, Arrival] | None = None,
    ) -> list[str]:
        """Unpack the (blob digest, size, media type, diff_id) layers of one image (all of
        them, lowest first) that are not unpacked yet; returns their keys (ChainIDs). A layer
        whose blob is in `arriving` (by digest) is applied as its bytes are downloaded; the
        others are read from the store. One at a time, lowest first: a layer's directory
        depends on the ones below it (see the module's docstring)."""
        keys = chain_ids([layer[3] for layer in layers])
        for i, (digest, size, media_type, diff_id) in enumerate(layers):
            if self.has(keys[i]):
                continue
            with self._lock(keys[i]):
                if self.has(keys[i]):
                    continue
                arrival = (arriving or {}).get(digest)
                if arrival is None:
                    fill = functools.partial(self._apply_blob, digest, size, media_type, diff_id)
                else:
                    fill = functools.partial(_apply_arriving, arrival, media_type, diff_id)
                self._unpack_one(digest, keys[: i + 1], fill)
        return keys

    def _apply_blob(
        self,
        digest: str,
        size: int,
        media_type: str,
        diff_id: str,
        dest: Path,
        fmt: str,
        lowers: list[Path] | None = None,
    ) -> None:
        """Apply one layer blob to `dest`, checking its digest and its diff_id (in overlay
        format over `lowers`, the directories of the layers below, top first)."""
        with self.store.open_blob(digest) as blob:
            packed = VerifyingReader(blob, digest, size, f"layer {digest}")
            _apply_stream(packed, media_type, diff_id, f"layer {digest}", dest, fmt, lowers or [])

    def export_rootfs(self, image: StoredImage, dest: Path) -> None:
        """Apply every layer, in order, to one directory (what `umoci unpack` makes). `dest`
        must be missing or an empty directory: one that holds anything is refused up front,
        so that nothing of the user's is ever deleted. When a layer is refused, what this made
        goes, as umoci does: `dest` and the parents it created, or, for an empty `dest` that
        was there, its new contents (and its owner, mode and times are put back)."""
        made = _first_missing(dest)
        before = None
        if made is None:
            if not dest.is_dir():
                raise LayerError(f"{dest} exists and is not a directory")
            if any(dest.iterdir()):
                raise LayerError(f"{dest} exists and is not empty")
            before = os.stat(dest)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            for desc, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
                self._apply_blob(desc.digest, desc.size, desc.media_type, diff_id, dest, "plain")
        except BaseException:
            _undo_export(dest, made, before)
            raise

    def _unpack_one(
        self, digest: str, chain: list[str], fill: Callable[[Path, str, list[Path]], None]
    ) -> None:
        """Unpack the top layer of `chain` (keys, lowest first) over the layers below it:
        `fill(dest, format, lowers)` applies it to a temporary directory, renamed into
        place only when it returned (the blob and the diff_id verified)."""
        key = chain[-1]
        tmp = self.root / "tmp" / f"{self.short_name(key)}.{os.getpid()}"
        lowers = [self.diff_dir(k) for k in reversed(chain[:-1])]
        try:
            if tmp.exists():
                _rmtree(tmp)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            _mark_top_dir(tmp.parent)
            (tmp / "diff").mkdir(parents=True)
            fill(tmp / "diff", "overlay", lowers)
            final = self.path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
        except BaseException as e:
            _rmtree(tmp, ignore_errors=True)
            if isinstance(e, ImgtoolError) or not isinstance(e, OSError | EOFError):
                raise
            raise LayerError(f"cannot unpack layer {digest}: {e}") from None
        links = self.root / "l"
        links.mkdir(exist_ok=True)
        link = links / self.short_name(key)
        with contextlib.suppress(FileExistsError):
            os.symlink(f"../sha256/{key.split(':', 1)[1]}/diff", link)

    def remove_unused(self, keep: set[str]) -> list[str]:
        """Remove unpacked layers whose key (ChainID) is not in `keep`; returns what went."""
        removed: list[str] = []
        base = self.root / "sha256"
        if not base.is_dir():
            return removed
        for d in base.iterdir():
            key = f"sha256:{d.name}"
            if key in keep:
                continue
            with self._lock(key):
                link = self.root / "l" / self.short_name(key)
                with contextlib.suppress(OSError):
                    # only its own: a layer whose key begins the same may hold the short name
                    if os.readlink(link) == f"../sha256/{d.name}/diff":
                        link.unlink()
                _rmtree(d, ignore_errors=True)
            removed.append(key)
        return removed


def _apply_arriving(
    arrival: Arrival, media_type: str, diff_id: str, dest: Path, fmt: str, lowers: list[Path]
) -> None:
    """Apply a layer as its blob arrives. The download hashes the compressed bytes (once);
    here the uncompressed ones are checked against the diff_id, and the end of the stream
    comes only when the blob is verified and stored. When the apply fails, a failed download
    is the error to report: a bad blob is why its tar is bad."""
    try:
        # the packed stream's drain returns once the blob is verified and in the store
        _apply_stream(arrival.reader(), media_type, diff_id, arrival.what, dest, fmt, lowers)
    except Exception:
        failed = arrival.outcome()
        if failed is not None:
            raise failed from None
        raise


def _apply_stream(
    packed: _PackedStream,
    media_type: str,
    diff_id: str,
    what: str,
    dest: Path,
    fmt: str,
    lowers: list[Path],
) -> None:
    """Decompress a layer's packed stream, check the tar against its diff_id while applying
    it, then drain both: tar writers leave padding after the end-of-archive blocks, and the
    packed stream is verified only at its end. Reading, decompressing and hashing run in a
    thread of their own (`ReadAhead`), beside the applier."""
    from imgtool import compression  # zstandard: only when a layer is unpacked
    from imgtool.layer.apply import apply_layer
    from imgtool.layer.readahead import ReadAhead

    kind = mt.layer_compression(media_type)
    codec = None if kind == "unknown" else kind
    plain = VerifyingReader(
        compression.open_decompressed(packed, codec),  # type: ignore[arg-type]
        diff_id,
        None,
        f"{what} (uncompressed, diff_id)",
    )
    with ReadAhead(plain) as ahead:
        apply_layer(ahead, dest, fmt, lowers)  # type: ignore[arg-type]
        ahead.drain()  # to the end of `plain`: its diff_id checked
    packed.drain()


FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def _mark_top_dir(path: Path) -> None:
    """Mark the directory where layers are unpacked as a top of directory hierarchies (ext4's
    `chattr +T`): its children, one per layer being unpacked, then get block groups of their
    own with free inodes and blocks (the Orlov allocator), not the group of the store's.
    There, on an ext4 without a journal, a tree deleted in the last minutes made every file
    creation scan the deleted inodes (`recently_deleted`): a layer took 4x as long to unpack.
    A placement hint only: where the file system refuses it, nothing changes."""
    import array  # only here: layers are unpacked by few commands

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & FS_TOPDIR_FL:
            flags[0] |= FS_TOPDIR_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    except OSError:
        pass
    finally:
        os.close(fd)


def _first_missing(path: Path) -> Path | None:
    """The topmost of `path` and its parents that does not exist (what `mkdir -p` makes)."""
    missing = None
    probe = as_path(os.path.abspath(path))
    while not os.path.lexists(probe):
        missing, probe = probe, probe.parent
    return missing


def _undo_export(dest: Path, made: Path | None, before: os.stat_result | None) -> None:
    """Take back what a refused export made (best effort: the refusal is the error)."""
    with contextlib.suppress(OSError):
        if made is not None:
            inroot.remove_tree(made)
            return
        with inroot.opened(os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
            for name in os.listdir(fd):
                inroot.remove(fd, name)
            if before is not None:
                os.chown(fd, before.st_uid, before.st_gid)
                os.chmod(fd, stat.S_IMODE(before.st_mode))
                os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
