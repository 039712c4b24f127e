"""Destinations: the store or an OCI layout directory (one transaction, see the package), a
registry, an archive file."""

from __future__ import annotations

import contextlib
import threading

from imgtool import oci
from imgtool import reference as refs
from imgtool.errors import (
    ImgtoolError,
    InvalidReference,
    SpecError,
)
from imgtool.progress import Callback, Event, ignore
from imgtool.registry.client import ClientPool, TransportOptions
from imgtool.store import INDEX_DIGEST_ANNOTATION, Ingest, Store
from imgtool.transports.common import Selected, each, short_digest, unique_blobs
from imgtool.transports.read import Source

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from collections.abc import Sequence

    from imgtool import archive as arc  # tarfile, zstandard: loaded only for archive copies


class Destination:
    """Takes chosen images (`write`, any number), then `commit()` or `abort()`."""

    label = ""

    def write(self, sel: Selected, src: Source, names: Sequence[str] | None = None) -> str:
        """Write one image; `names` (None: the destination's own) name it. Returns the digest
        of what names it there."""
        raise NotImplementedError

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


class StoreDestination(Destination):
    """The store or an OCI layout directory, written as one transaction (see the package)."""

    def __init__(self, store: Store, name: str | None, label: str, progress: Callback = ignore):
        self.store = store
        self.name = name
        self.label = label
        self.progress = progress
        self._stack = contextlib.ExitStack()
        self._holding = False
        self._staged: dict[str, Ingest] = {}
        self._documents: list[oci.Manifest | oci.Index] = []
        self._names: list[tuple[str | None, oci.Descriptor]] = []
        self._lock = threading.Lock()

    def write(self, sel: Selected, src: Source, names: Sequence[str] | None = None) -> str:
        if not self._holding:
            self._stack.enter_context(self.store.writing())  # gc waits until the names are set
            self._holding = True
        blobs = [d for d in unique_blobs(sel.manifests) if not self._known(d.digest)]
        each(blobs, lambda d: self._stage(d, src), src.parallel)
        self._documents += [d for d in (*sel.manifests, sel.top) if d not in self._documents]
        desc = sel.top.descriptor()
        if sel.index_digest:
            desc = desc.with_annotations({INDEX_DIGEST_ANNOTATION: sel.index_digest})
        chosen: Sequence[str | None] = [self.name] if names is None else (list(names) or [None])
        self._names += [(n, desc) for n in chosen]
        return sel.top.digest

    def _known(self, digest: str) -> bool:
        with self._lock:
            return digest in self._staged or self.store.has_blob(digest)

    def _stage(self, desc: oci.Descriptor, src: Source) -> None:
        short = short_digest(desc.digest)
        ing = self.store.ingest(desc.digest, desc.size)
        try:
            if ing.already_done:  # another process stored it while we waited
                ing.close()
                self.progress(Event("exists", short, desc.size, desc.size))
                return
            ing.restart()
            self.progress(Event("start", short, 0, desc.size))
            src.send_blob(desc, ing)  # the partial file hashes what it is given
            ing.verify()  # every blob of the transaction checked before any is committed
            ing.sync()  # here, beside the other downloads, not all at once at commit
        except BaseException:
            ing.discard()
            ing.close()
            raise
        with self._lock:
            self._staged[desc.digest] = ing
        self.progress(Event("done", short, desc.size, desc.size))

    def commit(self) -> None:
        try:
            for digest in list(self._staged):
                ing = self._staged[digest]
                ing.commit(sync_dir=False)  # checked and synced; set_ref syncs blobs/
                ing.close()
                del self._staged[digest]
            for doc in self._documents:
                self.store.write_blob(doc.raw, doc.digest, sync_dir=False)
            for name, desc in self._names:
                if name:
                    self.store.set_ref(name, desc)
                else:
                    self.store.add_unnamed(desc)
        finally:
            self.abort()  # what is left staged after a failure; releases the gc lock

    def abort(self) -> None:
        for ing in self._staged.values():
            ing.discard()
            ing.close()
        self._staged.clear()
        self._stack.close()


class RegistryDestination(Destination):
    """A repository of a registry: blobs it has are skipped, blobs another repository of it
    holds are mounted, the rest uploaded; manifests last, children before their index."""

    def __init__(self, ref: refs.Reference, transport: TransportOptions, progress: Callback):
        self.ref = ref
        self.label = f"docker://{ref}"
        self.client = ClientPool(transport).get(ref.api_host, transport.insecure)
        self.progress = progress

    def write(self, sel: Selected, src: Source, names: Sequence[str] | None = None) -> str:
        repo = self.ref.repository
        if self.ref.digest and self.ref.digest != sel.top.digest:
            raise InvalidReference(str(self.ref), f"the image's digest is {sel.top.digest}")
        each(unique_blobs(sel.manifests), lambda d: self._blob(d, src), src.parallel)
        if isinstance(sel.top, oci.Index):
            for m in sel.manifests:
                self.client.put_manifest(repo, m.digest, m.raw, m.media_type)
        top = sel.top
        return self.client.put_manifest(repo, self.ref.identifier, top.raw, top.media_type)

    def _blob(self, desc: oci.Descriptor, src: Source) -> None:
        repo, short = self.ref.repository, short_digest(desc.digest)
        if self.client.blob_exists(repo, desc.digest):
            self.progress(Event("exists", short, desc.size, desc.size))
            return
        location = None
        for source in src.mount_from(self.ref, desc.digest):
            try:
                location = self.client.mount_blob(repo, desc.digest, source)
            except ImgtoolError:
                continue  # no access to that repository: upload instead
            if location is None:
                self.progress(Event("mounted", short, desc.size, desc.size, f"from {source}"))
                return
            break
        self.progress(Event("start", short, 0, desc.size))
        self.client.upload_blob(repo, desc.digest, desc.size, lambda: src.open_blob(desc), location)
        self.progress(Event("done", short, desc.size, desc.size))


class _Aborted(Exception):
    pass


class ArchiveDestination(Destination):
    """A docker-archive or oci-archive file ("-": standard output), written whole or not at
    all. `ref` names the images written without names of their own."""

    def __init__(self, kind: str, path: str, ref: str, progress: Callback = ignore) -> None:
        self.kind = kind
        self.label = f"{kind}:{path}"
        self.ref = ref
        self.progress = progress
        if kind == "docker-archive" and ref:
            _tag_of(ref, self.label)  # refused before anything is written
        self._stack = contextlib.ExitStack()
        from imgtool import archive as arc
        from imgtool.tarball import output

        tar = self._stack.enter_context(output(path))
        self._writer: arc.DockerArchiveWriter | arc.OciArchiveWriter = (
            arc.DockerArchiveWriter(tar) if kind == "docker-archive" else arc.OciArchiveWriter(tar)
        )

    def write(self, sel: Selected, src: Source, names: Sequence[str] | None = None) -> str:
        from imgtool.archive import OciArchiveWriter  # loaded already, by __init__

        chosen = list(names) if names is not None else ([self.ref] if self.ref else [])
        if isinstance(self._writer, OciArchiveWriter):
            return self._writer.add(sel.top, sel.manifests, src.open_blob, chosen)
        if isinstance(sel.top, oci.Index) or len(sel.manifests) != 1:
            raise SpecError(f"{self.label}: a docker-archive holds one platform per image")
        tags = [_tag_of(n, self.label) for n in chosen]
        return self._writer.add(sel.manifests[0], src.open_blob, tags)

    def commit(self) -> None:
        self._writer.finish()
        self._stack.close()

    def abort(self) -> None:
        self._stack.__exit__(_Aborted, _Aborted(), None)  # the half-written file goes


def _tag_of(name: str, label: str) -> refs.Reference:
    try:
        ref = refs.parse(name)
    except InvalidReference as e:
        raise SpecError(f"{label}: {e}") from None
    if ref.digest:
        raise SpecError(f"{label}: {name} is a digest reference; a docker-archive names by tag")
    return ref
