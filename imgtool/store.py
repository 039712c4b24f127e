"""The image store: an OCI image layout on disk that skopeo, umoci and oci-image-tool read as is.

    <root>/oci-layout, index.json, blobs/sha256/<hex>   the layout itself
    <root>/ingest/<hex>.partial                          downloads in progress (resumable)
    <root>/locks/                                        flock(2) files

Blob writes are atomic (temporary file, fsync, rename, directory fsync) and verified before the
rename, so a blob under blobs/ is always whole and correct. `index.json` is rewritten under an
exclusive lock. Writers (pull, push, tag) hold the gc lock shared for the whole operation; gc
holds it exclusive, so it never removes a blob that a running pull has written but not yet named.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool import reference as refs
from imgtool.atomic import atomic_write, flocked, fsync_dir
from imgtool.digest import Digest, sha256
from imgtool.errors import (
    BlobNotFound,
    DigestMismatch,
    ImageNotFound,
    InvalidDigest,
    InvalidReference,
    SizeMismatch,
    SpecError,
    StoreError,
)
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from pathlib import Path
    from typing import BinaryIO

LAYOUT_HEADER = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_DIGEST_ANNOTATION = "io.imgtool.index.digest"
CHUNK = 1 << 20


def default_root() -> Path:
    return as_path(default_root_str())


def default_root_str() -> str:
    env = os.environ.get("IMGTOOL_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/imgtool"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(data, "imgtool")


def as_path(text: str) -> Path:
    """`text` as a Path, for library users. The store's own code works on strings (os.path):
    pathlib, with urllib.parse, ipaddress and fnmatch, costs the commands on the hot paths
    (run, a re-pull, images) milliseconds of imports they do not need."""
    from pathlib import Path

    return Path(text)


class StoredImage(Frozen):
    """An image in the store: the name it was found by, its top descriptor and, for a
    single-platform image (or the platform picked from an index), its manifest and config."""

    __slots__ = ("name", "descriptor", "manifest", "config", "index")
    name: str
    descriptor: oci.Descriptor
    manifest: oci.Manifest
    config: oci.ImageConfig
    index: oci.Index | None

    def __init__(
        self,
        name: str,
        descriptor: oci.Descriptor,
        manifest: oci.Manifest,
        config: oci.ImageConfig,
        index: oci.Index | None = None,
    ) -> None:
        self._init(name, descriptor, manifest, config, index)

    @property
    def digest(self) -> str:
        # a blob's name is its digest, checked when it was written: no need to hash it again
        # (and load OpenSSL) on every run; an index's entry names its manifest the same way
        if self.index is None:
            return self.descriptor.digest
        return self.manifest.digest

    @property
    def size(self) -> int:
        """Bytes of the image's blobs (config and compressed layers) plus the manifest."""
        return len(self.manifest.raw) + sum(d.size for d in self.manifest.blobs())


class Ingest:
    """A blob being written: resumable, verified, then renamed into place on `commit()`.

    `offset` is how many bytes an earlier, interrupted attempt already left; the caller asks
    the source for the rest (HTTP Range) or calls `restart()` when it cannot.
    """

    def __init__(self, store: Store, digest: Digest, size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self.path_str = os.path.join(store.root_str, "ingest", f"{digest.encoded}.partial")
        self._fd = self._open_locked()
        self.already_done = store.has_blob(str(digest))
        self._hash = sha256()
        self.offset = 0
        self._synced = -1  # the offset up to which sync() made the file durable
        if not self.already_done:
            self._rehash_partial()

    @property
    def path(self) -> Path:
        """The partial file."""
        return as_path(self.path_str)

    def _open_locked(self) -> int:
        """Open and lock the partial file; another process fetching the same blob waits here.
        When the lock is won on a file the previous holder already renamed into blobs/, open
        the path again."""
        while True:
            fd = os.open(self.path_str, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path_str).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _rehash_partial(self) -> None:
        with os.fdopen(os.dup(self._fd), "rb") as f:
            while chunk := f.read(CHUNK):
                self._hash.update(chunk)
                self.offset += len(chunk)
        if self.size is not None and self.offset > self.size:
            self.restart()
        os.lseek(self._fd, self.offset, os.SEEK_SET)

    def reader_fd(self) -> int:
        """A read-only descriptor of the file being written, for a reader that follows the
        writer with pread (it stays valid after `commit()` renames the file); the caller
        closes it. A file opened anew, not a dup: a dup would share, and so keep, the lock."""
        return os.open(self.path_str, os.O_RDONLY | os.O_CLOEXEC)

    def restart(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = sha256()
        self.offset = 0
        self._synced = -1

    def sync(self) -> None:
        """Make what was written durable now, beside other downloads, rather than all at once
        at commit, which then has nothing left to sync."""
        os.fsync(self._fd)
        self._synced = self.offset

    def write(self, data: bytes) -> None:
        if self.size is not None and self.offset + len(data) > self.size:
            self.discard()  # more than the descriptor says: it can never become right
            raise SizeMismatch(f"blob {self.digest}", self.size, self.offset + len(data))
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._hash.update(data)
        self.offset += len(data)

    def verify(self) -> None:
        """Check size and digest of what was written, without moving it: a transaction
        checks every blob before it commits any. On a mismatch the partial file is discarded
        (it can never become right)."""
        what = f"blob {self.digest}"
        actual = "sha256:" + self._hash.hexdigest()
        try:
            if self.size is not None and self.offset != self.size:
                raise SizeMismatch(what, self.size, self.offset)
            if actual != str(self.digest):
                raise DigestMismatch(what, str(self.digest), actual, self.offset)
        except (SizeMismatch, DigestMismatch):
            self.discard()
            raise

    def commit(self, sync_dir: bool = True) -> None:
        """Verify size and digest, then move the blob into place. On a mismatch the partial
        file is discarded and nothing enters the store. `sync_dir` False: the caller commits
        several; `set_ref` and `add_unnamed` sync blobs/ once before they name any."""
        self.verify()
        if self._synced != self.offset:  # sync() did it, unless bytes came after
            os.fsync(self._fd)
        os.replace(self.path_str, self.store.blob_path_str(str(self.digest)))
        if sync_dir:
            self.store.sync_blobs()

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_str)

    def close(self) -> None:
        if self._fd >= 0 and (self.already_done or self._empty_and_ours()):
            self.discard()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _empty_and_ours(self) -> bool:
        """Nothing came (a 404, a refused connection): an empty partial file resumes nothing,
        so it goes, and the store is left as it was. Ours: still the file at its path (after
        commit() renamed it, the path may be another process's new partial)."""
        st = os.fstat(self._fd)
        if st.st_size:
            return False  # bytes a later pull resumes from (HTTP Range)
        try:
            return os.stat(self.path_str).st_ino == st.st_ino
        except FileNotFoundError:
            return False

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store:
    def __init__(
        self, root: Path | str | None = None, resolve: Callable[[str], refs.Reference] | None = None
    ) -> None:
        # a string (os.path): see as_path
        self.root_str = os.fspath(root) if root is not None else default_root_str()
        self._ready = False
        # How a name as typed becomes a reference: Docker's rules unless told otherwise. The
        # CLI passes registries.conf's resolver, the one pull uses, so that a short-name
        # alias means the same image in every command.
        self.resolve = resolve or refs.parse

    @property
    def root(self) -> Path:
        """The store's directory."""
        return as_path(self.root_str)

    def _at(self, *parts: str) -> str:
        return os.path.join(self.root_str, *parts)

    # --- set-up and locks -----------------------------------------------------------------

    def init(self) -> Store:
        """Create the layout if needed; refuse a directory that is some other layout version."""
        if self._ready:
            return self
        try:
            for d in ("blobs/sha256", "ingest", "locks"):
                os.makedirs(self._at(d), exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store at {self.root_str}: {e.strerror}") from None
        header = self._at("oci-layout")
        with flocked(self._at("locks", "index.lock"), exclusive=True):
            if os.path.exists(header):
                with open(header, "rb") as f:
                    oci.validate_layout_header(f.read())
            else:
                atomic_write(header, LAYOUT_HEADER)
            if not os.path.exists(self._at("index.json")):
                self._write_index([])
        self._ready = True
        return self

    @contextlib.contextmanager
    def writing(self) -> Iterator[Store]:
        """Hold while adding blobs that are not named yet: keeps gc out until they are."""
        self.init()
        with flocked(self._at("locks", "gc.lock"), exclusive=False):
            yield self

    # --- blobs ----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return as_path(self.blob_path_str(digest))

    def blob_path_str(self, digest: str) -> str:
        return self._at("blobs", "sha256", self._blob_name(digest))

    @staticmethod
    def _blob_name(digest: str) -> str:
        try:
            return Digest.parse_sha256(digest).encoded
        except InvalidDigest as e:
            raise StoreError(str(e)) from None

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is here: a regular file, not a link (in a layout a stranger made,
        a link would make a copy skip the blob and name what is not in it)."""
        try:
            return stat.S_ISREG(os.lstat(self.blob_path_str(digest)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def open_blob(self, digest: str) -> BinaryIO:
        """A blob, opened without following a symlink below the store's root, and only a
        regular file: a layout a stranger made (`copy oci:DIR …`) must not make imgtool read,
        and send on, a host file (a FIFO would block the read forever)."""
        try:
            fd = self._open_below(("blobs", "sha256", self._blob_name(digest)))
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        return os.fdopen(fd, "rb")

    def _open_below(self, parts: tuple[str, ...]) -> int:
        """The regular file root/parts…, each component opened on its parent's descriptor
        with O_NOFOLLOW; StoreError naming it when one is a symlink or not what it must be."""
        nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        where = self.root_str
        fd = os.open(self.root_str, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                where = os.path.join(where, part)
                last = i == len(parts) - 1
                try:
                    nxt = os.open(part, nofollow | (0 if last else os.O_DIRECTORY), dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise StoreError(f"{where}: a symlink or not a directory") from None
                    raise
                os.close(fd)
                fd = nxt
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"{where}: not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    def blob_size(self, digest: str) -> int:
        try:
            return os.stat(self.blob_path_str(digest)).st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def ingest(self, digest: str, size: int | None = None) -> Ingest:
        self.init()
        return Ingest(self, Digest.parse_sha256(digest), size)

    def sync_blobs(self) -> None:
        """Make the renames into blobs/ durable: one directory fsync for any number of them."""
        fsync_dir(self._at("blobs", "sha256"))

    def write_blob(self, data: bytes, digest: str | None = None, sync_dir: bool = True) -> str:
        """Store bytes; when `digest` is given they must hash to it. Returns the digest.
        `sync_dir` as `Ingest.commit`'s."""
        actual = str(Digest.of(data))
        if digest is not None and digest != actual:
            raise DigestMismatch("blob", digest, actual, len(data))
        if self.has_blob(actual):
            return actual
        with self.ingest(actual, len(data)) as ing:
            if not ing.already_done:
                ing.restart()
                ing.write(data)
                ing.commit(sync_dir)
        return actual

    def write_blob_from(self, src: BinaryIO) -> tuple[str, int]:
        """Store a stream whose digest is not known beforehand; returns (digest, size)."""
        self.init()
        tmp = self._at("ingest", f"stream.{os.getpid()}.{id(src)}.partial")
        h = sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = "sha256:" + h.hexdigest()
            os.replace(tmp, self.blob_path_str(digest))
            fsync_dir(self._at("blobs", "sha256"))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return digest, size

    # --- index.json -----------------------------------------------------------------------

    def _read_index(self) -> list[oci.Descriptor]:
        path = self._at("index.json")
        try:
            with os.fdopen(self._open_below(("index.json",)), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            if not os.path.exists(self._at("oci-layout")):
                raise StoreError(f"{self.root_str} is not an OCI image layout") from None
            return []
        try:
            return list(oci.Index.from_json(raw).manifests)
        except SpecError as e:
            raise StoreError(f"{path} is damaged: {e}") from None

    def _write_index(self, manifests: list[oci.Descriptor]) -> None:
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [d.to_dict() for d in manifests],
        }
        atomic_write(self._at("index.json"), json.dumps(doc, indent=2).encode() + b"\n")

    def _write_index_naming(self, manifests: list[oci.Descriptor]) -> None:
        """index.json naming an image: the renames into blobs/ made durable first. Here, not
        by whoever renamed: a blob found present may be another process's rename (commit with
        sync_dir=False) that its directory fsync has not reached yet."""
        self.sync_blobs()
        self._write_index(manifests)

    def entries(self) -> list[oci.Descriptor]:
        """The descriptors of index.json, named or not, in order."""
        if not os.path.exists(self._at("oci-layout")):
            return []
        return self._read_index()

    def set_ref(self, name: str, desc: oci.Descriptor) -> None:
        """Point `name` at `desc` (replacing what it pointed at); the blobs must be there."""
        self.init()
        if not self.has_blob(desc.digest):
            raise BlobNotFound(desc.digest)
        annotations = {**desc.annotations, oci.REF_NAME: name}
        new = desc.with_annotations(annotations)
        with flocked(self._at("locks", "index.lock"), exclusive=True):
            current = self._read_index()
            if any(d.ref_name == name and d.to_dict() == new.to_dict() for d in current):
                return  # a pull of what is already here: no rewrite, no fsync
            manifests = [d for d in current if d.ref_name != name]
            manifests.append(new)
            self._write_index_naming(manifests)

    def add_unnamed(self, desc: oci.Descriptor) -> None:
        """List an image in index.json without a name (docker's <none>), once."""
        self.init()
        with flocked(self._at("locks", "index.lock"), exclusive=True):
            manifests = self._read_index()
            if not any(d.digest == desc.digest and not d.ref_name for d in manifests):
                manifests.append(desc)
                self._write_index_naming(manifests)

    def remove_ref(self, name: str) -> oci.Descriptor:
        self.init()
        with flocked(self._at("locks", "index.lock"), exclusive=True):
            manifests = self._read_index()
            if name.startswith("sha256:"):  # an unnamed entry, by its digest
                kept = [d for d in manifests if d.ref_name or d.digest != name]
                if len(kept) == len(manifests):
                    raise ImageNotFound(name)
                self._write_index(kept)
                return next(d for d in manifests if not d.ref_name and d.digest == name)
            kept = [d for d in manifests if d.ref_name != name]
            if len(kept) == len(manifests):
                raise ImageNotFound(name)
            removed = next(d for d in manifests if d.ref_name == name)
            self._write_index(kept)
        return removed

    # --- lookups --------------------------------------------------------------------------

    def find(self, name: str) -> tuple[str, oci.Descriptor]:
        """Find an image by name as given, by the reference `resolve` makes of it, or by
        digest or id (a prefix of at least 4 hex characters of the manifest or config digest)."""
        entries = self.entries()
        by_name = {d.ref_name: d for d in entries if d.ref_name}
        if name in by_name:
            return name, by_name[name]
        shown = name
        with contextlib.suppress(InvalidReference):
            shown = str(self.resolve(name))
            if shown in by_name:
                return shown, by_name[shown]
        hexpart = name.split(":", 1)[1] if name.startswith("sha256:") else name
        if len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart):
            hits = [d for d in entries if self._matches_id(d, hexpart)]
            distinct = {d.digest for d in hits}
            if len(distinct) == 1:
                return hits[0].ref_name or hits[0].digest, hits[0]
            if len(distinct) > 1:
                raise StoreError(f"{name!r} is ambiguous: it matches {len(distinct)} images")
        raise ImageNotFound(shown)

    def _matches_id(self, desc: oci.Descriptor, hexpart: str) -> bool:
        if desc.digest.split(":", 1)[1].startswith(hexpart):
            return True
        with contextlib.suppress(StoreError, SpecError):
            m = self.manifest(desc)
            if isinstance(m, oci.Manifest):
                return m.config.digest.split(":", 1)[1].startswith(hexpart)
        return False

    def manifest(self, desc: oci.Descriptor) -> oci.Manifest | oci.Index:
        raw = self.read_blob(desc.digest)
        media_type = desc.media_type
        if media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
            raise SpecError(f"{desc.digest} has media type {media_type!r}, not a manifest or index")
        return oci.parse_manifest_or_index(raw, media_type)

    def platform_manifests(self, top: oci.Manifest | oci.Index) -> list[oci.Manifest]:
        """The image manifests of a top manifest or index that are in the store."""
        if isinstance(top, oci.Manifest):
            return [top]
        out = []
        for c in top.manifests:
            if c.media_type in mt.MANIFEST_TYPES and self.has_blob(c.digest):
                m = self.manifest(c)
                if isinstance(m, oci.Manifest):
                    out.append(m)
        return out

    def config(self, manifest: oci.Manifest) -> oci.ImageConfig:
        return oci.ImageConfig.from_json(self.read_blob(manifest.config.digest))

    def image(self, name: str, platform: oci.Platform | None = None) -> StoredImage:
        """The image named `name`; for an index, the entry for `platform` (the host's)."""
        found, desc = self.find(name)
        top = self.manifest(desc)
        index = None
        if isinstance(top, oci.Index):
            index = top
            child = oci.select_platform(top, platform or oci.Platform.host())
            top = self.manifest(child)
            if isinstance(top, oci.Index):
                raise SpecError(f"{found}: nested indexes are not supported")
        return StoredImage(found, desc, top, self.config(top), index)

    # --- garbage collection ---------------------------------------------------------------

    def referenced(self) -> set[str]:
        """Every blob reachable from index.json. Unknown media types at the top are an error:
        gc cannot know what such a blob refers to."""
        seen: set[str] = set()
        # (descriptor, named in index.json): a stack, not recursion, however deep indexes nest
        todo = [(d, True) for d in reversed(self.entries())]
        while todo:
            desc, top = todo.pop()
            if desc.digest in seen:
                continue
            if desc.media_type in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
                if not self.has_blob(desc.digest):
                    if top:
                        raise StoreError(f"gc: {desc.digest} is named in index.json but missing")
                    continue  # an index may list platforms that were not pulled
                seen.add(desc.digest)
                m = self.manifest(desc)
                children = m.blobs() if isinstance(m, oci.Manifest) else list(m.manifests)
                todo.extend((c, False) for c in reversed(children))
            elif top:
                raise StoreError(f"gc: unknown media type: {desc.media_type}")
            else:
                seen.add(desc.digest)
        return seen

    def gc(self, dry_run: bool = False) -> list[tuple[str, int]]:
        """Remove every blob that index.json does not reach, and abandoned partial downloads.
        Returns (digest, size) of what was (or, with dry_run, would be) removed."""
        self.init()
        removed: list[tuple[str, int]] = []
        with flocked(self._at("locks", "gc.lock"), exclusive=True):
            keep = self.referenced()
            blobdir = self._at("blobs", "sha256")
            for name in sorted(os.listdir(blobdir)):
                digest = f"sha256:{name}"
                if digest in keep or name.startswith("."):
                    continue
                path = os.path.join(blobdir, name)
                removed.append((digest, os.stat(path).st_size))
                if not dry_run:
                    os.unlink(path)
            if not dry_run:
                ingest = self._at("ingest")
                for name in os.listdir(ingest):
                    if name.endswith(".partial"):
                        _unlink_if_unlocked(os.path.join(ingest, name))
        return removed


def _unlink_if_unlocked(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return
    try:
        os.unlink(path)
    finally:
        os.close(fd)
