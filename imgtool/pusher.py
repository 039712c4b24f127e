"""`imgtool push`: upload an image (or an index with all its platforms) to a registry.

Blobs the registry already has are skipped (HEAD); a blob that another image of the store came
from the same registry with is mounted from that repository; the rest is uploaded, small blobs
in one PUT and large ones in chunks. Manifests go last, children before their index.
"""

from __future__ import annotations

from imgtool import oci
from imgtool import reference as refs
from imgtool.errors import ImgtoolError, InvalidReference, SpecError
from imgtool.progress import Callback, Event, ignore
from imgtool.reference import Reference
from imgtool.registry.client import ClientPool, RegistryClient, TransportOptions
from imgtool.store import Store
from imgtool.values import Frozen, Value


class PushOptions(Value):
    __slots__ = ("transport", "progress")
    transport: TransportOptions
    progress: Callback

    def __init__(
        self, transport: TransportOptions | None = None, progress: Callback = ignore
    ) -> None:
        self._init(transport or TransportOptions(), progress)


class PushResult(Frozen):
    __slots__ = ("reference", "digest", "uploaded", "mounted", "skipped")
    reference: str
    digest: str
    uploaded: int
    mounted: int
    skipped: int

    def __init__(
        self, reference: str, digest: str, uploaded: int, mounted: int, skipped: int
    ) -> None:
        self._init(reference, digest, uploaded, mounted, skipped)


def push(
    name: str, store: Store, destination: str | None = None, options: PushOptions | None = None
) -> PushResult:
    opts = options or PushOptions()
    found, desc = store.find(name)
    dest = store.resolve(destination or found)  # a short destination follows its alias
    if dest.digest and desc.digest != dest.digest:
        raise InvalidReference(str(dest), f"the image's digest is {desc.digest}")
    client = ClientPool(opts.transport).get(dest.api_host, opts.transport.insecure)
    pusher = BlobPusher(client, dest, store, opts)
    with store.writing():
        top = store.manifest(desc)
        if isinstance(top, oci.Index):
            for child in top.manifests:
                if not store.has_blob(child.digest):
                    raise SpecError(
                        f"{found}: platform {child.platform} is not in the store "
                        "(pull with --all-platforms to push the whole index)"
                    )
                m = store.manifest(child)
                if isinstance(m, oci.Manifest):
                    pusher.manifest(m, child.digest)
                else:
                    raise SpecError(f"{found}: an index inside an index is not supported")
        else:
            pusher.blobs(top)
        digest = client.put_manifest(dest.repository, dest.identifier, top.raw, top.media_type)
    opts.progress(Event("pushed", str(dest), len(top.raw), len(top.raw)))
    return PushResult(str(dest), digest, pusher.uploaded, pusher.mounted, pusher.skipped)


class BlobPusher:
    """Puts blobs and manifests of the store into one repository: a blob the repository has
    is skipped (HEAD), one another repository of the registry has is mounted from it, the
    rest uploaded. Counts what it did. `also_mount_from` adds repositories to mount from
    (digest -> repositories) beyond where the store's names say images came from."""

    def __init__(
        self,
        client: RegistryClient,
        dest: Reference,
        store: Store,
        opts: PushOptions,
        also_mount_from: dict[str, list[str]] | None = None,
    ):
        self.client = client
        self.dest = dest
        self.store = store
        self.opts = opts
        self.uploaded = self.mounted = self.skipped = 0
        self._sources = mount_sources(store, dest)
        for digest, repos in (also_mount_from or {}).items():
            known = self._sources.setdefault(digest, [])
            known += [r for r in repos if r not in known and r != dest.repository]

    def manifest(self, m: oci.Manifest, digest: str) -> None:
        self.blobs(m)
        self.client.put_manifest(self.dest.repository, digest, m.raw, m.media_type)

    def blobs(self, m: oci.Manifest) -> None:
        for d in [*m.layers, m.config]:
            self.blob(d)

    def blob(self, desc: oci.Descriptor) -> None:
        repo = self.dest.repository
        short = desc.digest.split(":", 1)[1][:12]
        progress = self.opts.progress
        if self.client.blob_exists(repo, desc.digest):
            self.skipped += 1
            progress(Event("exists", short, desc.size, desc.size))
            return
        location = None
        for source in self._sources.get(desc.digest, []):
            try:
                location = self.client.mount_blob(repo, desc.digest, source)
            except ImgtoolError:
                continue  # no access to the source: upload instead
            if location is None:
                self.mounted += 1
                progress(Event("mounted", short, desc.size, desc.size, f"from {source}"))
                return
            break
        progress(Event("start", short, 0, desc.size))
        done = [0]

        def on_bytes(n: int) -> None:
            done[0] += n
            progress(Event("bytes", short, done[0], desc.size))

        self.client.upload_blob(
            repo,
            desc.digest,
            desc.size,
            lambda: self.store.open_blob(desc.digest),
            location,
            on_bytes,
        )
        self.uploaded += 1
        progress(Event("done", short, desc.size, desc.size))


def mount_sources(store: Store, dest: Reference) -> dict[str, list[str]]:
    """blob digest -> other repositories of the same registry that images in the store came
    from, and so can be mounted from."""
    sources: dict[str, list[str]] = {}
    for d in store.entries():
        if not d.ref_name:
            continue
        try:
            ref = refs.parse(d.ref_name)
        except InvalidReference:
            continue
        if ref.registry != dest.registry or ref.repository == dest.repository:
            continue
        try:
            top = store.manifest(d)
        except ImgtoolError:
            continue
        for m in store.platform_manifests(top):
            for b in m.blobs():
                repos = sources.setdefault(b.digest, [])
                if ref.repository not in repos:
                    repos.append(ref.repository)
    return sources
