"""`imgtool pull`: resolve a reference, pick a platform, fetch and verify every blob, name it.

Mirrors are tried in order before the registry itself. A tag is resolved with HEAD first, and
a manifest or blob already in the store is never fetched again. Layers come in parallel
(three at a time, as Docker does). Nothing is named until every blob is in the store, so an
interrupted or failed pull leaves the store's names exactly as they were.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.errors import (
    AuthError,
    DigestMismatch,
    ImgtoolError,
    NotFound,
    RegistryError,
    RegistryUnavailable,
    SpecError,
)
from imgtool.layer import chains
from imgtool.progress import Callback, Event, ignore
from imgtool.reference import Reference
from imgtool.registry import config as regconf
from imgtool.registry.options import MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, TransportOptions
from imgtool.store import INDEX_DIGEST_ANNOTATION, Store
from imgtool.values import Frozen, Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    # the layer code is imported where layers come: a re-pull of an image the store has
    # never needs it
    from imgtool.layer.arriving import Arrival
    from imgtool.registry.client import ClientPool, RegistryClient

MAX_CONCURRENT_DOWNLOADS = 3


class PullOptions(Value):
    __slots__ = (
        "platform",
        "all_platforms",
        "transport",
        "registries",
        "progress",
        "max_concurrent",
    )
    platform: oci.Platform | None
    all_platforms: bool
    transport: TransportOptions
    registries: regconf.RegistriesConf | None
    progress: Callback
    max_concurrent: int

    def __init__(
        self,
        platform: oci.Platform | None = None,
        all_platforms: bool = False,
        transport: TransportOptions | None = None,
        registries: regconf.RegistriesConf | None = None,
        progress: Callback = ignore,
        max_concurrent: int = MAX_CONCURRENT_DOWNLOADS,
    ) -> None:
        transport = TransportOptions() if transport is None else transport
        self._init(platform, all_platforms, transport, registries, progress, max_concurrent)


class PullResult(Frozen):
    __slots__ = (
        "name",
        "digest",
        "media_type",
        "index_digest",
        "source",
        "fetched_bytes",
        "platform",
    )
    name: str
    digest: str  # of what the name points at: the manifest, or the index with --all-platforms
    media_type: str
    index_digest: str | None
    source: str  # the endpoint that served it
    fetched_bytes: int
    platform: str

    def __init__(
        self,
        name: str,
        digest: str,
        media_type: str,
        index_digest: str | None,
        source: str,
        fetched_bytes: int,
        platform: str,
    ) -> None:
        self._init(name, digest, media_type, index_digest, source, fetched_bytes, platform)


def pull(text: str | Reference, store: Store, options: PullOptions | None = None) -> PullResult:
    opts = options or PullOptions()
    conf = opts.registries if opts.registries is not None else regconf.load()
    ref = conf.resolve(text) if isinstance(text, str) else text
    endpoints = conf.endpoints(ref, opts.transport.insecure)
    pool = _Connections(opts.transport)
    errors: list[ImgtoolError] = []
    with store.writing():
        for ep in endpoints:
            try:
                return _pull_from(ref, ep, pool, store, opts)
            except (RegistryError, DigestMismatch) as e:
                if not ep.mirror:
                    raise _with_reference(_most_telling(e, errors), ref) from None
                errors.append(e)
                opts.progress(Event("info", message=f"mirror {ep} failed: {e}; trying the next"))
    raise AssertionError("the registry itself is always the last endpoint")


def _most_telling(origin: ImgtoolError, mirrors: list[ImgtoolError]) -> ImgtoolError:
    """When the registry itself is unreachable but a mirror answered 'not found', the
    mirror's answer says more."""
    if isinstance(origin, RegistryUnavailable):
        for e in mirrors:
            if isinstance(e, NotFound):
                return e
    return origin


def _with_reference(e: ImgtoolError, ref: Reference) -> ImgtoolError:
    """Name the normalized reference in 'not found' and 'denied' errors, as docker does."""
    if isinstance(e, NotFound) and "manifests/" in e.url:
        return NotFound(
            f"manifest for {ref} not found: manifest unknown",
            method=e.method,
            url=e.url,
            status=e.status,
            codes=e.codes,
        )
    if isinstance(e, AuthError) and e.status in (401, 403) and not e.repository:
        # the registry's reason does not name the repository: say which image was refused
        return AuthError(f"{ref}: {e}", method=e.method, url=e.url, status=e.status, codes=e.codes)
    return e


class _Connections:
    """The registry clients, made (and requests imported) only when a request needs one: a
    re-pull of an image already in the store asks one quick HEAD and nothing else."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self._pool: ClientPool | None = None

    def get(self, host: str, insecure: bool) -> RegistryClient:
        if self._pool is None:
            from imgtool.registry.client import ClientPool

            self._pool = ClientPool(self.options)
        return self._pool.get(host, insecure)


class _Fetcher:
    """Fetches manifests and blobs of one repository into the store, verified."""

    def __init__(
        self, pool: _Connections, ep: regconf.Endpoint, store: Store, opts: PullOptions
    ) -> None:
        self.pool = pool
        self.endpoint = ep
        self.repository = ep.repository
        self.store = store
        self.opts = opts
        self.fetched = 0
        self._client: RegistryClient | None = None
        self.named: set[str] = set()  # digests the store's name for this reference points at

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = self.pool.get(self.endpoint.host, self.endpoint.insecure)
        return self._client

    def _head(self, tag: str) -> tuple[str, str] | None:
        """The digest and type of the manifest a tag names, or None when the registry does not
        say. For a name the store already has (a re-pull), asked with `quickhead` first, while
        no client is needed yet (see its docstring); a fresh pull needs the client anyway, and
        its HEAD goes over the connection the rest of the pull uses."""
        if self._client is None and self.named:
            from imgtool.registry import quickhead

            transport = self.opts.transport
            if self.endpoint.insecure and not transport.insecure:
                transport = transport.replace(insecure=True)  # as ClientPool.get does
            quick = quickhead.head_manifest(self.endpoint.host, self.repository, tag, transport)
            if quick is not None:
                return quick.digest, quick.media_type
        info = self.client.head_manifest(self.repository, tag)
        return None if info is None else (info.digest, info.media_type)

    def manifest(self, ref: str, known: oci.Descriptor | None = None) -> oci.Manifest | oci.Index:
        """By digest (store first) or by tag (HEAD first, then the store, then GET)."""
        digest = ref if ref.startswith("sha256:") else None
        media_type = known.media_type if known else None
        if known is not None and known.size > MAX_MANIFEST_BYTES:
            raise SpecError(
                f"manifest {self.repository}@{known.digest} is {known.size} bytes, over the "
                f"{MAX_MANIFEST_BYTES >> 20} MiB limit"
            )
        if digest is None:
            head = self._head(ref)
            if head is not None:
                digest, media_type = head[0], head[1] or media_type
        if digest is not None and self.store.has_blob(digest):
            return oci.parse_manifest_or_index(self.store.read_blob(digest), media_type)
        got = self.client.get_manifest(self.repository, digest or ref)
        if digest is not None and got.digest != digest:
            raise DigestMismatch(
                f"manifest {self.repository}@{digest}", digest, got.digest, len(got.raw)
            )
        parsed = oci.parse_manifest_or_index(got.raw, got.media_type or media_type)
        self.store.write_blob(got.raw, got.digest)
        self.fetched += len(got.raw)
        return parsed

    def blob(self, desc: oci.Descriptor, arrival: Arrival | None = None) -> None:
        """Fetch a blob into the store, verified; an `arrival` lets a reader follow it."""
        short = desc.digest.split(":", 1)[1][:12]
        progress = self.opts.progress
        if self.store.has_blob(desc.digest):
            if arrival is not None:
                arrival.stored(str(self.store.blob_path(desc.digest)))
            progress(Event("exists", short, desc.size, desc.size))
            return
        with self.store.ingest(desc.digest, desc.size) as ingest:
            if ingest.already_done:  # another process fetched it while we waited
                if arrival is not None:
                    arrival.stored(str(self.store.blob_path(desc.digest)))
                progress(Event("exists", short, desc.size, desc.size))
                return
            progress(Event("start", short, ingest.offset, desc.size))
            done = [ingest.offset]

            def on_bytes(n: int) -> None:
                done[0] += n
                self.fetched += n
                progress(Event("bytes", short, done[0], desc.size))

            sink = ingest if arrival is None else arrival.sink(ingest)
            self.client.download_blob(self.repository, desc.digest, sink, on_bytes)
            ingest.commit()
        progress(Event("done", short, desc.size, desc.size))

    def _arrive(self, desc: oci.Descriptor, arrival: Arrival) -> None:
        try:
            self.blob(desc, arrival)
        except BaseException as e:
            arrival.fail(e)
            raise
        arrival.finish()

    def blobs(self, descs: Sequence[oci.Descriptor]) -> None:
        unique = list({d.digest: d for d in descs}.values())
        if len(unique) <= 1 or self.opts.max_concurrent <= 1:
            for d in unique:
                self.blob(d)
            return
        # imported here: a pull with nothing to fetch should not pay for it (7 ms, with logging)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.opts.max_concurrent) as pool:
            futures = [pool.submit(self.blob, d) for d in unique]
            for f in futures:
                f.result()  # the first failure is raised; the others finish or fail alone

    def layers(self, m: oci.Manifest, diff_ids: list[str]) -> None:
        """Download the layers in parallel and unpack each as its bytes arrive, lowest first
        (a layer's directory depends on those below it), so that `run` finds them ready.
        Nothing unpacked is visible before its blob is verified and stored."""
        if len(diff_ids) != len(m.layers):
            raise SpecError(
                f"{self.repository}: the config names {len(diff_ids)} layers, the manifest "
                f"{len(m.layers)}"
            )
        missing = {d.digest: d for d in m.layers if not self.store.has_blob(d.digest)}
        if not missing and chains.unpacked_keys(self.store.root_str, diff_ids) is not None:
            return  # a re-pull: nothing to fetch or unpack, nor the code that would
        from imgtool.layer.unpacked import LayerStore

        layers = LayerStore(self.store)
        todo = [
            (d.digest, d.size, d.media_type, diff_id)
            for d, diff_id in zip(m.layers, diff_ids, strict=True)
        ]
        if not missing:
            layers.unpack_layers(todo)
            return
        from concurrent.futures import ThreadPoolExecutor

        from imgtool.layer.arriving import Arrival

        arrivals = {digest: Arrival(f"layer {digest}") for digest in missing}
        pool = ThreadPoolExecutor(max_workers=max(1, self.opts.max_concurrent))
        try:
            futures = [pool.submit(self._arrive, d, arrivals[d.digest]) for d in missing.values()]
            try:
                layers.unpack_layers(todo, arrivals)
            finally:
                pool.shutdown(cancel_futures=True)  # what has not started never will
            for f in futures:
                if not f.cancelled():
                    f.result()
        finally:
            pool.shutdown()
            for a in arrivals.values():
                a.close()


def _pull_from(
    ref: Reference, ep: regconf.Endpoint, pool: _Connections, store: Store, opts: PullOptions
) -> PullResult:
    fetcher = _Fetcher(pool, ep, store, opts)
    fetcher.named = _named_digests(store, str(ref))
    top = fetcher.manifest(ref.identifier)
    wanted = opts.platform or oci.Platform.host()
    index_digest = None
    if isinstance(top, oci.Index):
        index_digest = top.digest
        if opts.all_platforms:
            return _pull_index(ref, ep, fetcher, top, store, opts)
        child = oci.select_platform(top, wanted)
        m = fetcher.manifest(child.digest, child)
        if not isinstance(m, oci.Manifest):
            raise SpecError(f"{ref}: an index inside an index is not supported")
    else:
        m = top
    _check_manifest(m, ref)
    # the config first: a platform that does not match is refused before any layer comes
    fetcher.blob(m.config)
    config = oci.ImageConfig.from_json(store.read_blob(m.config.digest))
    if opts.platform is not None and not config.platform.serves(wanted):
        raise SpecError(f"{ref} is for {config.platform}, not {wanted}")
    if _unpacks_layers():
        fetcher.layers(m, config.diff_ids)
    else:
        fetcher.blobs(m.layers)
    annotations = {INDEX_DIGEST_ANNOTATION: index_digest} if index_digest else {}
    name = str(ref)
    store.set_ref(name, oci.Descriptor(m.media_type, m.digest, len(m.raw), annotations))
    return PullResult(
        name, m.digest, m.media_type, index_digest, str(ep), fetcher.fetched, str(config.platform)
    )


def _named_digests(store: Store, name: str) -> set[str]:
    """The manifest (and index) digests `name` points at in the store; empty when it is new."""
    out: set[str] = set()
    for d in store.entries():
        if d.ref_name == name:
            out.add(d.digest)
            if d.annotations.get(INDEX_DIGEST_ANNOTATION):
                out.add(d.annotations[INDEX_DIGEST_ANNOTATION])
    return out


def _pull_index(
    ref: Reference,
    ep: regconf.Endpoint,
    fetcher: _Fetcher,
    index: oci.Index,
    store: Store,
    opts: PullOptions,
) -> PullResult:
    for child in index.manifests:
        if child.media_type not in mt.MANIFEST_TYPES:
            continue  # attestations and artifacts of other kinds are left where they are
        m = fetcher.manifest(child.digest, child)
        if isinstance(m, oci.Manifest):
            _check_manifest(m, ref)
            fetcher.blobs(m.blobs())
    store.set_ref(str(ref), oci.Descriptor(index.media_type, index.digest, len(index.raw)))
    return PullResult(
        str(ref), index.digest, index.media_type, index.digest, str(ep), fetcher.fetched, "all"
    )


def _unpacks_layers() -> bool:
    """Only root unpacks: overlay whiteouts are character devices (mknod) and opaque
    directories trusted.* xattrs, and `run`, which uses them, needs root anyway."""
    return os.geteuid() == 0


def _check_manifest(m: oci.Manifest, ref: Reference) -> None:
    if m.config.media_type not in mt.CONFIG_TYPES:
        raise SpecError(f"{ref} is not a container image (config type {m.config.media_type})")
    _check_config_size(m, ref)
    for layer in m.layers:
        if layer.media_type not in mt.LAYER_TYPES:
            raise SpecError(f"{ref}: unsupported layer media type {layer.media_type!r}")


def _check_config_size(m: oci.Manifest, ref: Reference) -> None:
    """containers/image's limit: a config is read into memory whole."""
    if m.config.size > MAX_CONFIG_BYTES:
        raise SpecError(
            f"{ref}: its config is {m.config.size} bytes, over the "
            f"{MAX_CONFIG_BYTES >> 20} MiB limit for configs"
        )


def resolve_remote(
    text: str, platform: oci.Platform | None = None, insecure: bool = False
) -> tuple[Reference, oci.Manifest, bytes]:
    """The manifest (for the platform) and the config of a registry image, verified, without
    fetching a layer or writing to the store: for `layers --remote` and the like."""
    from imgtool.registry.client import ClientPool

    conf = regconf.load()
    ref = conf.resolve(text)
    pool = ClientPool(TransportOptions(insecure=insecure))
    last: ImgtoolError | None = None
    for ep in conf.endpoints(ref, insecure):
        client = pool.get(ep.host, ep.insecure)
        try:
            got = client.get_manifest(ep.repository, ref.identifier)
            if ref.digest and got.digest != ref.digest:
                raise DigestMismatch(f"manifest {ref}", ref.digest, got.digest, len(got.raw))
            top = oci.parse_manifest_or_index(got.raw, got.media_type)
            if isinstance(top, oci.Index):
                child = oci.select_platform(top, platform or oci.Platform.host())
                got = client.get_manifest(ep.repository, child.digest)
                if got.digest != child.digest:
                    raise DigestMismatch(f"manifest {child.digest}", child.digest, got.digest)
                top = oci.parse_manifest_or_index(got.raw, got.media_type)
            if not isinstance(top, oci.Manifest):
                raise SpecError(f"{ref}: an index inside an index is not supported")
            _check_config_size(top, ref)
            return ref, top, client.get_config(ep.repository, top.config.digest)
        except (RegistryError, DigestMismatch) as e:
            if not ep.mirror:
                raise _with_reference(_most_telling(e, [last] if last else []), ref) from None
            last = e
    raise AssertionError("the registry itself is always the last endpoint")
