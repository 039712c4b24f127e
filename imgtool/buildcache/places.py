"""Where a cache artifact lives: a registry repository or an OCI layout directory.

Reading (an origin): the manifest, the config, and one blob at a time into the store, every
byte bounded and verified. Writing (a target): blobs from the store first, the manifest last,
so that a reader (or a concurrent writer) only ever sees whole artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool import reference as refs
from imgtool.buildcache.artifact import CACHE_ARTIFACT
from imgtool.digest import Digest
from imgtool.errors import DigestMismatch, NotFound, SizeMismatch, SpecError, StoreError
from imgtool.progress import Callback
from imgtool.pusher import BlobPusher, PushOptions
from imgtool.registry.client import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    ClientPool,
    TransportOptions,
)
from imgtool.store import Ingest, Store
from imgtool.transports.common import each

LAYOUT_TAG = "latest"  # the name the cache manifest has in a layout directory's index.json


class Origin(Protocol):
    name: str

    def manifest(self) -> bytes | None: ...  # None: no cache there yet

    def config(self, desc: oci.Descriptor) -> bytes: ...

    def send(self, desc: oci.Descriptor, sink: Ingest) -> None: ...


class Target(Protocol):
    def put_blobs(self, descs: list[oci.Descriptor]) -> None: ...

    def put_manifest(self, raw: bytes) -> str: ...

    def counts(self) -> tuple[int, int, int]: ...  # blobs uploaded, mounted, already there


def fetch(store: Store, desc: oci.Descriptor, send: Callable[[Ingest], None]) -> None:
    """The blob into the store, verified by the store's Ingest; on any failure nothing of it
    stays (not even a partial file)."""
    with store.writing(), store.ingest(desc.digest, desc.size) as ingest:
        if ingest.already_done:
            return
        try:
            ingest.restart()  # senders write from the first byte (a layout cannot resume)
            send(ingest)
            ingest.commit()
        except BaseException:
            ingest.discard()
            raise


def _checked(raw: bytes, desc: oci.Descriptor, what: str) -> bytes:
    if len(raw) != desc.size:
        raise SizeMismatch(what, desc.size, len(raw))
    actual = str(Digest.of(raw))
    if actual != desc.digest:
        raise DigestMismatch(what, desc.digest, actual, len(raw))
    return raw


# --- a registry repository ----------------------------------------------------------------


class RegistryPlace:
    def __init__(self, ref: refs.Reference, transport: TransportOptions) -> None:
        self.ref = ref
        self.name = f"registry {ref}"
        self.client = ClientPool(transport).get(ref.api_host, transport.insecure)

    def manifest(self) -> bytes | None:
        try:
            got = self.client.get_manifest(self.ref.repository, self.ref.identifier)
        except NotFound:
            return None  # the first build that exports it has not run yet
        if self.ref.digest and got.digest != self.ref.digest:
            raise DigestMismatch(f"cache manifest {self.ref}", self.ref.digest, got.digest)
        assert got.raw is not None
        return got.raw

    def config(self, desc: oci.Descriptor) -> bytes:
        if desc.size > MAX_CONFIG_BYTES:
            raise SpecError(f"{self.name}: cache config of {desc.size} bytes is too large")
        raw = self.client.get_config(self.ref.repository, desc.digest)
        return _checked(raw, desc, f"cache config {desc.digest}")

    def send(self, desc: oci.Descriptor, sink: Ingest) -> None:
        self.client.download_blob(self.ref.repository, desc.digest, sink)


class RegistryTarget:
    """Uploads through push's own blob logic: HEAD first, then a mount from another repository
    of the registry that has the blob, else an upload."""

    def __init__(
        self,
        store: Store,
        place: RegistryPlace,
        mount_from: dict[str, list[str]],
        progress: Callback,
    ) -> None:
        self.place = place
        # the caches this build read are mount sources too
        self.pusher = BlobPusher(
            place.client, place.ref, store, PushOptions(progress=progress), mount_from
        )

    def put_blobs(self, descs: list[oci.Descriptor]) -> None:
        each(descs, self.pusher.blob, parallel=True)

    def put_manifest(self, raw: bytes) -> str:
        ref = self.place.ref
        return self.place.client.put_manifest(ref.repository, ref.identifier, raw, mt.OCI_MANIFEST)

    def counts(self) -> tuple[int, int, int]:
        return self.pusher.uploaded, self.pusher.mounted, self.pusher.skipped


# --- an OCI layout directory --------------------------------------------------------------


class LayoutPlace:
    """A directory in the OCI image layout (what `type=local` reads and writes): a Store."""

    def __init__(self, path: Path) -> None:
        self.layout = Store(path)
        self.name = f"directory {path}"

    def _bounded(self, desc: oci.Descriptor, limit: int, what: str) -> bytes:
        if desc.size > limit:
            raise SpecError(f"{self.name}: {what} of {desc.size} bytes is too large")
        with self.layout.open_blob(desc.digest) as f:
            raw = f.read(limit + 1)
        return _checked(raw, desc, f"{what} {desc.digest}")

    def manifest(self) -> bytes | None:
        if not (self.layout.root / "oci-layout").is_file():
            return None  # the first build that exports it has not run yet
        try:
            found = [d for d in self.layout.entries() if d.ref_name == LAYOUT_TAG]
        except StoreError as e:
            raise StoreError(f"{self.name}: {e}") from None
        if not found:
            return None
        return self._bounded(found[-1], MAX_MANIFEST_BYTES, "cache manifest")

    def config(self, desc: oci.Descriptor) -> bytes:
        return self._bounded(desc, MAX_CONFIG_BYTES, "cache config")

    def send(self, desc: oci.Descriptor, sink: Ingest) -> None:
        with self.layout.open_blob(desc.digest) as f:
            while chunk := f.read(1 << 20):
                sink.write(chunk)


class LayoutTarget:
    def __init__(self, store: Store, place: LayoutPlace) -> None:
        self.store = store
        self.layout = place.layout.init()
        self.copied = self.skipped = 0

    def _put(self, desc: oci.Descriptor) -> None:
        if self.layout.has_blob(desc.digest):
            self.skipped += 1
            return

        def send(sink: Ingest) -> None:
            with self.store.open_blob(desc.digest) as f:
                while chunk := f.read(1 << 20):
                    sink.write(chunk)

        fetch(self.layout, desc, send)
        self.copied += 1

    def put_blobs(self, descs: list[oci.Descriptor]) -> None:
        for desc in descs:
            self._put(desc)

    def put_manifest(self, raw: bytes) -> str:
        digest = self.layout.write_blob(raw)
        desc = oci.Descriptor(mt.OCI_MANIFEST, digest, len(raw), artifact_type=CACHE_ARTIFACT)
        self.layout.set_ref(LAYOUT_TAG, desc)  # under the layout's index lock: last one wins
        return digest

    def counts(self) -> tuple[int, int, int]:
        return self.copied, 0, self.skipped
