"""Sources: the store or an OCI layout directory, a registry, an archive."""

from __future__ import annotations

from imgtool import oci
from imgtool.errors import (
    BlobNotFound,
    DigestMismatch,
    ImgtoolError,
)
from imgtool.registry.client import ClientPool, RegistryClient, TransportOptions
from imgtool.store import Store

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import BinaryIO

    from imgtool import archive as arc  # tarfile, zstandard: loaded only for archive copies
    from imgtool import reference as refs
    from imgtool.registry.client import BlobSink

CHUNK = 1 << 20


class Source:
    """An image to read. `top()` first; then documents and blobs by descriptor."""

    label = ""
    parallel = True  # blobs may be opened from several threads at once

    def top(self) -> oci.Manifest | oci.Index:
        raise NotImplementedError

    def document(self, desc: oci.Descriptor) -> oci.Manifest | oci.Index:
        raise NotImplementedError

    def has(self, desc: oci.Descriptor) -> bool:
        return True

    def open_blob(self, desc: oci.Descriptor) -> BinaryIO:
        raise NotImplementedError

    def send_blob(self, desc: oci.Descriptor, sink: BlobSink) -> None:
        """Write the blob's bytes into `sink` (the store's staging). A registry overrides it:
        its download pushes, with retries and Range resumes, and needs no thread."""
        with self.open_blob(desc) as f:
            while chunk := f.read(CHUNK):
                sink.write(chunk)

    def mount_from(self, dest: refs.Reference, digest: str) -> list[str]:
        """Repositories of `dest`'s registry that already hold the blob."""
        return []

    def close(self) -> None:
        pass


class StoreSource(Source):
    """An image of the store, or of an OCI layout directory (which is a store)."""

    def __init__(self, store: Store, name: str, label: str = "") -> None:
        self.store = store
        self.name, self.descriptor = store.find(name)
        self.label = label or self.name
        self._mounts: dict[str, list[str]] | None = None

    def top(self) -> oci.Manifest | oci.Index:
        return self.store.manifest(self.descriptor)

    def document(self, desc: oci.Descriptor) -> oci.Manifest | oci.Index:
        if not self.store.has_blob(desc.digest):
            raise BlobNotFound(desc.digest)
        return self.store.manifest(desc)

    def has(self, desc: oci.Descriptor) -> bool:
        return self.store.has_blob(desc.digest)

    def open_blob(self, desc: oci.Descriptor) -> BinaryIO:
        return self.store.open_blob(desc.digest)

    def mount_from(self, dest: refs.Reference, digest: str) -> list[str]:
        if self._mounts is None:
            from imgtool.pusher import mount_sources  # push's own rule: where images came from

            self._mounts = mount_sources(self.store, dest)
        return self._mounts.get(digest, [])


class RegistrySource(Source):
    """An image in a registry, through its mirrors (registries.conf) as pull reads it."""

    def __init__(self, text: str, transport: TransportOptions) -> None:
        from imgtool.registry import config as regconf

        conf = regconf.load()
        self.ref = conf.resolve(text)
        self.label = f"docker://{self.ref}"
        self._endpoints = conf.endpoints(self.ref, transport.insecure)
        self._pool = ClientPool(transport)
        self._client: RegistryClient | None = None
        self._host = self._repository = ""

    def top(self) -> oci.Manifest | oci.Index:
        for ep in self._endpoints:
            client = self._pool.get(ep.host, ep.insecure)
            try:
                got = client.get_manifest(ep.repository, self.ref.identifier)
                if self.ref.digest and got.digest != self.ref.digest:
                    raise DigestMismatch(f"manifest {self.ref}", self.ref.digest, got.digest)
            except ImgtoolError:
                if not ep.mirror:
                    raise
                continue
            self._client, self._host, self._repository = client, ep.host, ep.repository
            return oci.parse_manifest_or_index(got.raw, got.media_type)
        raise AssertionError("the registry itself is always the last endpoint")

    def _connected(self) -> RegistryClient:
        if self._client is None:
            self.top()
        assert self._client is not None
        return self._client

    def document(self, desc: oci.Descriptor) -> oci.Manifest | oci.Index:
        got = self._connected().get_manifest(self._repository, desc.digest)
        if got.digest != desc.digest:
            raise DigestMismatch(f"manifest {self.label}@{desc.digest}", desc.digest, got.digest)
        return oci.parse_manifest_or_index(got.raw, got.media_type or desc.media_type)

    def open_blob(self, desc: oci.Descriptor) -> BinaryIO:
        from imgtool.transports.pipe import Pipe  # queue: only a blob read as a file needs it

        client, repo = self._connected(), self._repository
        return Pipe(desc.size, lambda sink: client.download_blob(repo, desc.digest, sink))  # type: ignore[return-value]

    def send_blob(self, desc: oci.Descriptor, sink: BlobSink) -> None:
        self._connected().download_blob(self._repository, desc.digest, sink)

    def mount_from(self, dest: refs.Reference, digest: str) -> list[str]:
        same = self._host == dest.api_host and self._repository != dest.repository
        return [self._repository] if same else []


class ArchiveSource(Source):
    """One image of a docker-archive or oci-archive."""

    def __init__(self, archive: arc.ImageArchive, image: arc.ArchiveImage, owned: bool) -> None:
        self.archive = archive
        self.image = image
        self.owned = owned
        shown = f":{image.written[0]}" if image.written else ""
        self.label = archive.label + shown

    def top(self) -> oci.Manifest | oci.Index:
        return self.image.top

    def document(self, desc: oci.Descriptor) -> oci.Manifest | oci.Index:
        return self.archive.document(desc)

    def has(self, desc: oci.Descriptor) -> bool:
        return self.archive.has_blob(desc.digest)

    def open_blob(self, desc: oci.Descriptor) -> BinaryIO:
        return self.archive.open_blob(desc.digest)

    def close(self) -> None:
        if self.owned:
            self.archive.close()
