"""`imgtool copy`, `save` and `load`: images between the store, OCI layout directories,
registries and archives, named as skopeo names them:

    docker://HOST/REPO[:TAG|@DIGEST]   a registry (credentials and mirrors as pull and push)
    oci:DIR[:REF]                      an OCI image layout directory; REF its ref name
    docker-archive:FILE[:REF]          `docker save`'s format; REF a RepoTag (to read: or @N)
    oci-archive:FILE[:REF]             an OCI image layout in a tar
    store:NAME, or a NAME alone        imgtool's own store

Manifests are copied byte for byte between the registry, layouts, the store and oci-archives,
so digests stay; a docker-archive holds uncompressed layers, so its manifests are its own (the
image id and diff_ids stay). Without --all one platform of an index is copied (this host's, or
--platform), as skopeo does; with --all the whole index.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.digest import Digest
from imgtool.errors import DigestMismatch, InvalidReference, SpecError, StoreError
from imgtool.progress import Callback, ignore
from imgtool.registry.options import MAX_CONFIG_BYTES, TransportOptions
from imgtool.store import Store
from imgtool.transports import (
    ArchiveDestination,
    ArchiveSource,
    Destination,
    RegistryDestination,
    RegistrySource,
    Selected,
    Source,
    StoreDestination,
    StoreSource,
)
from imgtool.values import Frozen, Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import BinaryIO

ARCHIVE_FORMATS = ("docker-archive", "oci-archive")
_UNSUPPORTED = ("dir", "containers-storage", "docker-daemon", "ostree", "sif", "tarball")


class Location(Frozen):
    """A parsed `TRANSPORT:…` argument. `path` is the directory or file, or for the registry
    and the store the reference; `ref` what follows a path (a path has no colon, as in skopeo)."""

    __slots__ = ("transport", "path", "ref")
    transport: str  # docker, oci, docker-archive, oci-archive, store
    path: str
    ref: str

    def __init__(self, transport: str, path: str, ref: str = "") -> None:
        self._init(transport, path, ref)

    @classmethod
    def parse(cls, text: str) -> Location:
        if text.startswith("docker://"):
            return cls("docker", text[len("docker://") :])
        for transport in ("oci", *ARCHIVE_FORMATS):
            if text.startswith(transport + ":"):
                path, _, ref = text[len(transport) + 1 :].partition(":")
                if not path:
                    raise InvalidReference(text, f"{transport}: needs a path")
                return cls(transport, path, ref)
        if text.startswith("store:"):
            return cls("store", text[len("store:") :])
        prefix = text.split(":", 1)[0]
        if prefix in _UNSUPPORTED:
            raise InvalidReference(
                text,
                f"transport {prefix}: is not supported (docker://, oci:, docker-archive:, "
                "oci-archive:, store:)",
            )
        return cls("store", text)

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.path}"
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")


class CopyOptions(Value):
    __slots__ = (
        "all_platforms",
        "platform",
        "source_transport",
        "destination_transport",
        "progress",
    )
    all_platforms: bool
    platform: oci.Platform | None
    source_transport: TransportOptions
    destination_transport: TransportOptions
    progress: Callback

    def __init__(
        self,
        all_platforms: bool = False,
        platform: oci.Platform | None = None,
        source_transport: TransportOptions | None = None,
        destination_transport: TransportOptions | None = None,
        progress: Callback = ignore,
    ) -> None:
        self._init(
            all_platforms,
            platform,
            source_transport or TransportOptions(),
            destination_transport or TransportOptions(),
            progress,
        )


class CopyResult(Frozen):
    __slots__ = ("source", "destination", "digest", "media_type", "platforms")
    source: str  # what was read, as a label (docker://…, oci:…, a store name)
    destination: str
    digest: str  # of what names the image at the destination
    media_type: str
    platforms: int

    def __init__(
        self, source: str, destination: str, digest: str, media_type: str, platforms: int
    ) -> None:
        self._init(source, destination, digest, media_type, platforms)


class Loaded(Frozen):
    __slots__ = ("names", "digest", "image_id")
    names: tuple[str, ...]  # the names set in the store (none: an unnamed image)
    digest: str  # of the manifest (or index) the names point at
    image_id: str  # the config's digest ("" for an index)

    def __init__(self, names: tuple[str, ...], digest: str, image_id: str) -> None:
        self._init(names, digest, image_id)


# --- opening -------------------------------------------------------------------------------


def open_source(loc: Location, store: Store, transport: TransportOptions) -> Source:
    if loc.transport == "docker":
        return RegistrySource(loc.path, transport)
    if loc.transport == "store":
        return StoreSource(store, loc.path)
    if loc.transport == "oci":
        return _layout_source(loc)
    from imgtool import archive as arc

    archive = arc.open_archive(loc.path, loc.transport)
    try:
        return ArchiveSource(archive, archive.select(loc.ref), owned=True)
    except BaseException:
        archive.close()
        raise


def _layout_source(loc: Location) -> StoreSource:
    if not os.path.isfile(os.path.join(loc.path, "oci-layout")):
        raise SpecError(f"oci:{loc.path}: no OCI image layout there (no oci-layout file)")
    layout = Store(loc.path)
    entries = layout.entries()
    ref = loc.ref
    if not ref:
        if len(entries) != 1:
            names = ", ".join(d.ref_name or d.digest for d in entries) or "none"
            raise SpecError(
                f"oci:{loc.path} holds {len(entries)} images ({names}): say which, as "
                f"oci:{loc.path}:NAME"
            )
        ref = entries[0].ref_name or entries[0].digest
    if not any(ref in (d.ref_name, d.digest) for d in entries):
        raise StoreError(f"oci:{loc.path} has no image named {ref}")
    return StoreSource(layout, ref, f"oci:{loc.path}:{ref}")


def open_destination(
    loc: Location, store: Store, transport: TransportOptions, progress: Callback = ignore
) -> Destination:
    if loc.transport == "docker":
        return RegistryDestination(store.resolve(loc.path), transport, progress)
    if loc.transport == "store":
        name = str(store.resolve(loc.path))
        return StoreDestination(store, name, f"store:{name}", progress)
    if loc.transport == "oci":
        return StoreDestination(Store(loc.path), loc.ref or None, str(loc), progress)
    return ArchiveDestination(loc.transport, loc.path, loc.ref, progress)


# --- choosing what to copy -----------------------------------------------------------------


def select(
    src: Source, all_platforms: bool | None, platform: oci.Platform | None = None
) -> Selected:
    """The image to copy: a manifest as it is; of an index, every platform (`all_platforms`
    True; None: when the source has them all) or the one for `platform` (this host's)."""
    top = src.top()
    if isinstance(top, oci.Manifest):
        if platform is not None:
            _check_platform(src, top, platform)
        return Selected(top, (top,))
    whole = all_platforms or (all_platforms is None and all(src.has(c) for c in top.manifests))
    if whole:
        return Selected(top, tuple(_child(src, c) for c in top.manifests))
    chosen = oci.select_platform(top, platform or oci.Platform.host())
    return Selected(_child(src, chosen), (_child(src, chosen),), index_digest=top.digest)


def _check_platform(src: Source, manifest: oci.Manifest, wanted: oci.Platform) -> None:
    """A single manifest asked for by platform must be of it (as pull checks)."""
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise SpecError(f"{src.label}: its config is over the 4 MiB limit")
    with src.open_blob(manifest.config) as f:
        raw = f.read(manifest.config.size + 1)
    actual = str(Digest.of(raw))
    if actual != manifest.config.digest:
        raise DigestMismatch(f"config of {src.label}", manifest.config.digest, actual, len(raw))
    have = oci.ImageConfig.from_json(raw).platform
    if not have.serves(wanted):
        raise SpecError(f"{src.label} is for {have.normalized()}, not {wanted.normalized()}")


def _child(src: Source, desc: oci.Descriptor) -> oci.Manifest:
    if desc.media_type not in mt.MANIFEST_TYPES:
        raise SpecError(f"{src.label}: {desc.digest} is a {desc.media_type}, not an image manifest")
    doc = src.document(desc)
    if not isinstance(doc, oci.Manifest):
        raise SpecError(f"{src.label}: an index inside an index is not supported")
    return doc


def _write_all(
    dst: Destination, items: Sequence[tuple[Selected, Source, Sequence[str] | None]]
) -> list[str]:
    """Every image, then commit; any failure aborts, leaving the destination as it was."""
    try:
        digests = [dst.write(sel, src, names) for sel, src, names in items]
        dst.commit()
    except BaseException:
        dst.abort()
        raise
    return digests


# --- the verbs -----------------------------------------------------------------------------


def copy(
    source: str, destination: str, store: Store, options: CopyOptions | None = None
) -> CopyResult:
    """Copy one image (or a whole index with `all_platforms`) from `source` to `destination`."""
    opts = options or CopyOptions()
    src_loc, dst_loc = Location.parse(source), Location.parse(destination)
    src = open_source(src_loc, store, opts.source_transport)
    try:
        sel = select(src, opts.all_platforms, opts.platform)
        dst = open_destination(dst_loc, store, opts.destination_transport, opts.progress)
        digest = _write_all(dst, [(sel, src, None)])[0]
    finally:
        src.close()
    kind = sel.top.media_type if digest == sel.top.digest else mt.OCI_MANIFEST
    return CopyResult(src.label, dst.label, digest, kind, len(sel.manifests))


def save(
    store: Store,
    names: Sequence[str],
    output: str,
    fmt: str = "docker-archive",
    platform: oci.Platform | None = None,
) -> list[str]:
    """Write images of the store to an archive (`output` "-": standard output), as `docker
    save`: one entry per image, its names as RepoTags (none when it was named by id). A
    docker-archive holds one platform of an index (this host's, or `platform`); an
    oci-archive the whole index, unless `platform` picks one. Returns the digests written."""
    if fmt not in ARCHIVE_FORMATS:
        raise SpecError(f"unknown archive format {fmt!r} (docker-archive or oci-archive)")
    groups: dict[str, tuple[Selected, Source, list[str]]] = {}
    for name in names:
        src = StoreSource(store, name)
        whole = fmt == "oci-archive" and platform is None
        sel = select(src, None if whole else False, platform)
        _, _, tags = groups.setdefault(sel.top.digest, (sel, src, []))
        tag = _name_given(store, name, src.name)
        if tag and tag not in tags:
            tags.append(tag)
    dst = ArchiveDestination(fmt, output, "")
    return _write_all(dst, list(groups.values()))


def _name_given(store: Store, typed: str, found: str) -> str | None:
    """The store name `typed` means, unless it was an image id or digest (docker save leaves
    RepoTags out then)."""
    if typed == found:
        return found
    with contextlib.suppress(InvalidReference):
        if str(store.resolve(typed)) == found:
            return found
    return None


def load(store: Store, path: str | None = None, stream: BinaryIO | None = None) -> list[Loaded]:
    """Load every image of an archive (either format, compressed or not; `path` None or "-":
    `stream`) into the store, as one transaction: a damaged or hostile archive changes nothing.
    An index whose platforms are all there is kept whole, else this host's platform."""
    shown = path if path and path != "-" else "standard input"
    from imgtool import archive as arc

    with _archive_file(store, path, stream) as file:
        archive = arc.open_archive(file, shown=shown)
        try:
            items = []
            for image in archive.images:
                src = ArchiveSource(archive, image, owned=False)
                items.append((select(src, None), src, list(image.names)))
            digests = _write_all(StoreDestination(store, None, "store"), items)
        finally:
            archive.close()
    return [
        Loaded(tuple(names or ()), digest, _image_id(sel))
        for (sel, _, names), digest in zip(items, digests, strict=True)
    ]


def _image_id(sel: Selected) -> str:
    return sel.top.config.digest if isinstance(sel.top, oci.Manifest) else ""


@contextlib.contextmanager
def _archive_file(store: Store, path: str | None, stream: BinaryIO | None) -> Iterator[str]:
    """A plain tar file to read members from at their offsets: the file itself, or, for a
    pipe or a compressed archive, a decompressed copy in the store's ingest/ that goes after."""
    from imgtool import compression  # gzip and zstd: only an archive to load may need them

    src: BinaryIO | None = stream
    opened = None
    if path and path != "-":
        try:
            opened = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise SpecError(f"{path}: cannot open: {e.strerror}") from None
        if compression.sniff(opened.read(4)) == "none":
            opened.close()
            yield path
            return
        opened.seek(0)
        src = opened
    if src is None:
        raise SpecError("load: no archive given (a file, or one on standard input)")
    store.init()
    spool = os.path.join(store.root, "ingest", f"load.{os.getpid()}.tar")
    try:
        with open(spool, "wb") as out:
            _decompress_into(src, out, path or "standard input")
        yield spool
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool)
        if opened is not None:
            opened.close()


def _decompress_into(src: BinaryIO, out: BinaryIO, shown: str) -> None:
    from imgtool import compression
    from imgtool.tarball import copy_stream

    try:
        copy_stream(compression.open_decompressed(src), out.write)
    except OSError as e:
        if e.errno is not None:
            raise  # reading or writing failed, not the format: the CLI names the path
        raise SpecError(f"{shown}: does not decompress: {e}") from None
    except Exception as e:  # gzip, zlib and zstd each raise their own kind
        raise SpecError(f"{shown}: does not decompress: {e}") from None
