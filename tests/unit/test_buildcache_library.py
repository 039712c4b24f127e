"""The build cache at the library level, against the real registry: two stores are two CI
runners. Export and import round trips, what is fetched (only what a hit needs), what is
uploaded (never a blob the repository has; a mount from a sibling repository), hostile
caches refused with one line and the store left as it was, concurrent exports."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtool import compression, oci
from imgtool import mediatypes as mt
from imgtool.buildcache import artifact as art
from imgtool.buildcache import export, open_source, parse_spec
from imgtool.buildcache.mounts import mount_dir
from imgtool.buildcache.places import LayoutPlace, LayoutTarget, RegistryPlace, RegistryTarget
from imgtool.builder import CacheEntry, Layer
from imgtool.digest import Digest
from imgtool.errors import DigestMismatch, ImgtoolError, LayerError, SpecError
from imgtool.progress import ignore
from imgtool.reference import parse as parse_ref
from imgtool.registry.client import TransportOptions
from imgtool.store import Store
from tests.support.proxy import FaultProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.registry


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_entry(store: Store, n: int, stage: str = "1", final: bool = True) -> CacheEntry:
    raw = tar_of({f"file{n}": f"step {n} of stage {stage}".encode()})
    blob = compression.gzip_bytes(raw)
    digest = store.init().write_blob(blob)
    layer = Layer(
        digest, len(blob), mt.OCI_LAYER_GZIP, str(Digest.of(raw)), f"2024-01-0{n}T00:00:00Z"
    )
    return CacheEntry(Digest.of(f"key {n} {stage}".encode()).encoded, layer, stage, final)


def blobs_of(store: Store) -> set[str]:
    d = store.root / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def snapshot(store: Store) -> tuple[set[str], set[str]]:
    ingest = store.root / "ingest"
    return blobs_of(store), {p.name for p in ingest.iterdir()} if ingest.exists() else set()


@pytest.fixture
def runners(tmp_path: Path) -> tuple[Store, Store]:
    return Store(tmp_path / "runner-a").init(), Store(tmp_path / "runner-b").init()


@pytest.fixture
def entries(runners: tuple[Store, Store]) -> list[CacheEntry]:
    a, _ = runners
    return [make_entry(a, 1, "build", False), make_entry(a, 2, "final"), make_entry(a, 3, "final")]


_counter = iter(range(1_000_000))


def cache_ref(reg: Registry, repo: str = "app/cache") -> str:
    return f"{reg.host}/{repo}{next(_counter)}:buildcache"


def test_registry_round_trip_fetches_only_what_a_hit_needs(
    plain_registry: Registry, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, b = runners
    spec = parse_spec(f"type=registry,ref={cache_ref(plain_registry)},mode=max", "to")
    done = export(a, entries, spec)
    assert (done.entries, done.layers, done.uploaded) == (3, 3, 4)  # 3 layers + the config
    source = open_source(b, spec)
    assert blobs_of(b) == set()  # the manifest and config only: nothing in the store
    hit = source.lookup(entries[2].key)
    assert hit == entries[2].layer  # digest, size, media type, diff_id and created
    assert blobs_of(b) == {entries[2].layer.digest.split(":")[1]}
    assert source.lookup(Digest.of(b"never built").encoded) is None
    assert blobs_of(b) == {entries[2].layer.digest.split(":")[1]}  # a miss fetched nothing
    assert source.lookup(entries[0].key) == entries[0].layer
    assert len(blobs_of(b)) == 2


def test_mode_min_exports_the_target_stage_only(
    plain_registry: Registry, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, b = runners
    spec = parse_spec(f"type=registry,ref={cache_ref(plain_registry)}", "to")
    assert export(a, entries, spec).entries == 2
    source = open_source(b, spec)
    assert source.lookup(entries[0].key) is None  # an earlier stage's step: only with max
    assert source.lookup(entries[1].key) == entries[1].layer


def test_blobs_the_repository_has_are_not_uploaded_again(
    plain_registry: Registry, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, _ = runners
    spec = parse_spec(f"type=registry,ref={cache_ref(plain_registry)},mode=max", "to")
    export(a, entries[:2], spec)
    again = export(a, entries, spec)
    assert (again.uploaded, again.skipped) == (2, 2)  # the new layer and config; 2 were there


def test_a_sibling_repository_is_mounted_from(
    plain_registry: Registry, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, b = runners
    first = parse_spec(
        f"type=registry,ref={cache_ref(plain_registry, 'team/cache')},mode=max", "to"
    )
    export(a, entries, first)
    source = open_source(b, first)
    for e in entries:
        source.lookup(e.key)
    second = parse_spec(
        f"type=registry,ref={cache_ref(plain_registry, 'other/cache')},mode=max", "to"
    )
    done = export(b, entries, second, sources=[source])
    assert (done.mounted, done.uploaded) == (3, 1)  # the layers mounted, only the config sent


def test_local_directory_round_trip(
    tmp_path: Path, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, b = runners
    where = tmp_path / "cache"
    done = export(a, entries, parse_spec(f"type=local,dest={where},mode=max", "to"))
    index = json.loads((where / "index.json").read_text())
    (top,) = index["manifests"]
    assert top["digest"] == done.digest and top["artifactType"] == art.CACHE_ARTIFACT
    assert Store(where).referenced() >= {e.layer.digest for e in entries}  # a valid layout
    source = open_source(b, parse_spec(f"type=local,src={where}", "from"))
    assert [source.lookup(e.key) for e in entries] == [e.layer for e in entries]
    assert blobs_of(b) == {e.layer.digest.split(":")[1] for e in entries}


def test_no_cache_there_yet_misses_everything(
    plain_registry: Registry, tmp_path: Path, runners: tuple[Store, Store]
) -> None:
    _, b = runners
    for text in (f"type=registry,ref={cache_ref(plain_registry)}", f"type=local,src={tmp_path}/x"):
        source = open_source(b, parse_spec(text, "from"))
        assert not source.found
        assert source.lookup("0" * 64) is None


def test_a_plain_image_is_not_a_cache(plain_registry: Registry, store: Store) -> None:
    spec = parse_spec(f"type=registry,ref={plain_registry.host}/team/app:1.0", "from")
    with pytest.raises(SpecError, match="is not an imgtool build cache"):
        open_source(store, spec)


# --- hostile caches -----------------------------------------------------------------------


def put_cache(
    reg: Registry, store: Store, ref: str, config: dict, layers: list[oci.Descriptor]
) -> None:
    """Push a hand-made cache artifact (whatever its config says) with its blobs."""
    raw = oci.canonical_json(config)
    store.write_blob(raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": art.CACHE_CONFIG, "digest": str(Digest.of(raw)), "size": len(raw)},
        "layers": [d.to_dict() for d in layers],
    }
    place = RegistryPlace(parse_ref(ref), TransportOptions())
    target = RegistryTarget(store, place, {}, ignore)
    target.put_blobs([*layers, oci.Descriptor(art.CACHE_CONFIG, str(Digest.of(raw)), len(raw))])
    target.put_manifest(oci.canonical_json(manifest))


def entry_doc(e: CacheEntry, **over: str) -> dict:
    doc = {"key": e.key, "digest": e.layer.digest, "diffID": e.layer.diff_id,
           "created": e.layer.created, "stage": e.stage}  # fmt: skip
    return {**doc, **over}


def layer_desc(e: CacheEntry) -> oci.Descriptor:
    return oci.Descriptor(e.layer.media_type, e.layer.digest, e.layer.size)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-blob", "is not one of the cache manifest's layers"),
        ("bad-key", "is not 64 hex digits"),
        ("bad-diff-id", "invalid digest"),
        ("duplicate-key", "is listed twice"),
        ("not-a-layer", "is not a layer media type"),
        ("wrong-version", "not a version 1"),
        ("entries-not-a-list", "entries must be an array"),
        ("oversized-config", "too large"),
    ],
)
def test_a_hostile_cache_config_is_refused(
    plain_registry: Registry,
    runners: tuple[Store, Store],
    entries: list[CacheEntry],
    case: str,
    message: str,
) -> None:
    a, b = runners
    ref = cache_ref(plain_registry)
    e = entries[1]
    layers = [layer_desc(e)]
    docs = [entry_doc(e)]
    config: dict = {"version": 1, "entries": docs, "mounts": []}
    if case == "missing-blob":
        docs.append(entry_doc(entries[2]))  # its layer is not in the manifest
    elif case == "bad-key":
        docs[0]["key"] = "../../etc/passwd"
    elif case == "bad-diff-id":
        docs[0]["diffID"] = "sha256:xyz"
    elif case == "duplicate-key":
        docs.append(dict(docs[0]))
    elif case == "not-a-layer":
        cfg = a.write_blob(b"{}")
        layers = [oci.Descriptor(mt.OCI_CONFIG, cfg, 2)]
        docs[0]["digest"] = cfg
    elif case == "wrong-version":
        config["version"] = 2
    elif case == "entries-not-a-list":
        config["entries"] = {"k": "v"}
    elif case == "oversized-config":
        config["padding"] = "x" * (4 << 20)
    put_cache(plain_registry, a, ref, config, layers)
    before = snapshot(b)
    with pytest.raises(ImgtoolError) as got:
        open_source(b, parse_spec(f"type=registry,ref={ref}", "from"))
    assert message in str(got.value) and "\n" not in str(got.value)
    assert snapshot(b) == before


@pytest.fixture
def proxy(plain_registry: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(plain_registry.host).start()
    yield p
    p.stop()


def test_corrupt_bytes_are_refused_and_the_store_is_unchanged(
    plain_registry: Registry,
    proxy: FaultProxy,
    runners: tuple[Store, Store],
    entries: list[CacheEntry],
) -> None:
    a, b = runners
    path = cache_ref(plain_registry).split("/", 1)[1]
    export(a, entries, parse_spec(f"type=registry,ref={plain_registry.host}/{path},mode=max", "to"))
    through = parse_spec(f"type=registry,ref={proxy.host}/{path}", "from")
    source = open_source(b, through)
    before = snapshot(b)
    proxy.corrupt_blobs = True
    with pytest.raises(DigestMismatch) as got:
        source.lookup(entries[1].key)  # the layer's bytes do not match its digest
    assert "\n" not in str(got.value)
    assert snapshot(b) == before  # no blob, no partial file
    with pytest.raises(DigestMismatch):
        open_source(b, through)  # the config's bytes do not match either
    assert snapshot(b) == before


def test_a_tampered_directory_cache_is_refused(
    tmp_path: Path, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, b = runners
    where = tmp_path / "cache"
    export(a, entries, parse_spec(f"type=local,dest={where},mode=max", "to"))
    source = open_source(b, parse_spec(f"type=local,src={where}", "from"))
    blob = where / "blobs" / "sha256" / entries[0].layer.digest.split(":")[1]
    blob.write_bytes(b"\0" * entries[0].layer.size)
    before = snapshot(b)
    with pytest.raises(DigestMismatch):
        source.lookup(entries[0].key)
    assert snapshot(b) == before


def test_an_oversized_manifest_is_refused(tmp_path: Path, store: Store) -> None:
    where = Store(tmp_path / "cache").init()
    raw = b'{"schemaVersion":2,"layers":[],"pad":"' + b"x" * (4 << 20) + b'"}'
    where.set_ref("latest", oci.Descriptor(mt.OCI_MANIFEST, where.write_blob(raw), len(raw)))
    before = snapshot(store.init())
    with pytest.raises(SpecError, match="too large"):
        open_source(store, parse_spec(f"type=local,src={where.root}", "from"))
    assert snapshot(store) == before


# --- concurrency --------------------------------------------------------------------------


def test_concurrent_exports_leave_one_whole_cache(
    plain_registry: Registry, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, b = runners
    spec = parse_spec(f"type=registry,ref={cache_ref(plain_registry)},mode=max", "to")
    sets = [entries[:2], [entries[0], *(make_entry(a, n, "other") for n in (4, 5, 6, 7))]]
    errors: list[BaseException] = []

    def run(chosen: list[CacheEntry]) -> None:
        try:
            for _ in range(3):
                export(a, chosen, spec)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    source = open_source(b, spec)
    assert source.index is not None
    keys = set(source.index.entries)
    assert keys in ({e.key for e in s} for s in sets)  # one writer's cache, whole
    for e in (e for s in sets for e in s if e.key in keys):
        assert source.lookup(e.key) == e.layer  # and every blob it names is there


# --- cache mounts -------------------------------------------------------------------------


def test_cache_mounts_travel_with_mounts_true(
    plain_registry: Registry, runners: tuple[Store, Store], entries: list[CacheEntry]
) -> None:
    a, b = runners
    apt = mount_dir(a, "apt")
    (apt / "archives").mkdir(parents=True)
    (apt / "archives" / "pkg.deb").write_bytes(b"a package")
    ref = cache_ref(plain_registry)
    done = export(
        a,
        entries,
        parse_spec(f"type=registry,ref={ref},mounts=true", "to"),
        mount_ids=["apt", "pip"],
    )
    assert done.mounts == ("apt",)  # pip was never made: nothing to send
    open_source(b, parse_spec(f"type=registry,ref={ref}", "from"))
    assert not mount_dir(b, "apt").exists()  # mounts=false: not restored
    open_source(b, parse_spec(f"type=registry,ref={ref},mounts=true", "from"))
    assert (mount_dir(b, "apt") / "archives" / "pkg.deb").read_bytes() == b"a package"


def hostile_mount_tar() -> bytes:
    """A `..` path, and a symlink to / with a file written through it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        up = tarfile.TarInfo("../../../../escaped")
        up.size = 3
        tar.addfile(up, io.BytesIO(b"out"))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        tar.addfile(link)
        through = tarfile.TarInfo("link/escaped-too")
        through.size = 3
        tar.addfile(through, io.BytesIO(b"out"))
    return buf.getvalue()


def test_a_hostile_cache_mount_stays_inside_its_directory(
    tmp_path: Path, runners: tuple[Store, Store]
) -> None:
    a, b = runners
    blob = compression.gzip_bytes(hostile_mount_tar())
    desc = oci.Descriptor(art.MOUNT_MEDIA_TYPE, a.write_blob(blob), len(blob))
    made = art.build([], {"evil": desc})
    a.write_blob(made.config_raw)
    target = LayoutTarget(a, LayoutPlace(tmp_path / "cache"))
    config = oci.Descriptor(art.CACHE_CONFIG, str(Digest.of(made.config_raw)), len(made.config_raw))
    target.put_blobs([*made.blobs, config])
    target.put_manifest(made.manifest_raw)
    try:
        open_source(b, parse_spec(f"type=local,src={tmp_path / 'cache'},mounts=true", "from"))
    except LayerError as e:
        assert "\n" not in str(e)  # refused is fine too; escaping is not
    inside = mount_dir(b, "evil")
    for name in ("escaped", "escaped-too"):
        assert [p for p in Path("/").glob(name)] == []
        assert all(inside in p.parents for p in tmp_path.rglob(name))
