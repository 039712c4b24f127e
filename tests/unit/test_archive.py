"""Archives read in place and written streaming (imgtool/tarball.py, imgtool/archive/), the
transports' parsing and picking, and loads of damaged or hostile archives: each is refused with
one line and the store is left exactly as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.archive import DockerArchiveWriter, OciArchiveWriter, open_archive
from imgtool.copy import Location, load, select
from imgtool.errors import DigestMismatch, ImgtoolError, InvalidReference, SpecError
from imgtool.store import Store
from imgtool.tarball import TarReader, TarWriter, output
from imgtool.transports import Pipe, Source, StoreSource

LAYER = make_images.layer_tar(
    [("etc", "dir", None, 0o755), ("etc/hello", "file", b"hello\n", 0o644)]
)
LAYER2 = make_images.layer_tar([("etc", "dir", None, 0o755), ("etc/two", "file", b"2\n", 0o644)])
LAYER3 = make_images.layer_tar([("etc", "dir", None, 0o755), ("etc/3", "file", b"3\n", 0o644)])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tar(path: Path, members: list[tuple]) -> Path:
    """members: (name, bytes) | (name, "symlink"|"hardlink", target) | (name, "dir")."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m[0])
            if len(m) == 2 and m[1] == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif len(m) == 3:
                info.type = tarfile.SYMTYPE if m[1] == "symlink" else tarfile.LNKTYPE
                info.linkname = m[2]
                tar.addfile(info)
            else:
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def docker_members(layers: list[bytes] = (LAYER,), tag: str = "app:1") -> list[tuple]:
    """An old-style `docker save` archive's members: <id>/layer.tar, <config>.json."""
    config = make_images.config_for(list(layers))
    names = [f"{sha(raw)}/layer.tar" for raw in layers]
    manifest = [{"Config": f"{sha(config)}.json", "RepoTags": [tag], "Layers": names}]
    return [
        *zip(names, layers, strict=True),
        (f"{sha(config)}.json", config),
        ("manifest.json", json.dumps(manifest).encode()),
    ]


def oci_members(layer: bytes = LAYER, ref: str = "docker.io/library/app:1") -> list[tuple]:
    blob = gzip.compress(layer, mtime=0)
    config = make_images.config_for([layer])
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": f"sha256:{sha(config)}",
                "size": len(config),
            },
            "layers": [
                {"mediaType": mt.OCI_LAYER_GZIP, "digest": f"sha256:{sha(blob)}", "size": len(blob)}
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": f"sha256:{sha(manifest)}",
                "size": len(manifest),
                "annotations": {oci.REF_NAME: ref},
            }
        ],
    }
    return [
        (f"blobs/sha256/{sha(blob)}", blob),
        (f"blobs/sha256/{sha(config)}", config),
        (f"blobs/sha256/{sha(manifest)}", manifest),
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index).encode()),
    ]


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else sha(p.read_bytes())
    return out


@pytest.fixture
def loaded_store(tmp_path: Path) -> Store:
    """A store that already holds an image, so that every directory and lock exists."""
    store = Store(tmp_path / "store")
    load(store, str(write_tar(tmp_path / "first.tar", docker_members([LAYER2], "first:1"))))
    return store


# --- reading in place ----------------------------------------------------------------------


def test_old_docker_archive_loads_with_its_image_id_and_diff_ids(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    path = write_tar(tmp_path / "a.tar", docker_members())
    [image] = load(store, str(path))
    assert image.names == ("docker.io/library/app:1",)
    img = store.image("app:1")
    config = make_images.config_for([LAYER])
    assert img.config.digest == image.image_id == f"sha256:{sha(config)}"
    # an uncompressed layer keeps its bytes: its digest is its diff_id
    assert [d.digest for d in img.manifest.layers] == img.config.diff_ids
    assert img.manifest.layers[0].media_type == mt.OCI_LAYER


def test_docker25_archive_keeps_its_manifest_digest(tmp_path: Path) -> None:
    """What the Docker 25 writer writes, the reader takes back byte for byte."""
    store = Store(tmp_path / "store")
    load(store, str(write_tar(tmp_path / "a.tar", oci_members())))
    src = StoreSource(store, "app:1")
    path = tmp_path / "d25.tar"
    with output(str(path)) as tar:
        writer = DockerArchiveWriter(tar)
        sel = select(src, False)
        digest = writer.add(sel.manifests[0], src.open_blob, [store.resolve("app:1")])
        writer.finish()
    archive = open_archive(path)
    try:
        assert archive.kind == "docker-archive"
        [image] = archive.images
        assert image.top.digest == digest
        assert image.written == ("app:1",)
        assert archive.reader.has("index.json") and archive.reader.has("repositories")
    finally:
        archive.close()


def test_containerd_style_docker_archive_keeps_compressed_layers(tmp_path: Path) -> None:
    """Docker 25 on containerd's store: manifest.json names compressed blobs, and index.json
    reaches the manifest through an index. The manifest is taken as it is."""
    members = oci_members()
    (layer_name, _), (config_name, _), (manifest_name, manifest) = members[:3]
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": f"sha256:{sha(manifest)}",
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    top = {"mediaType": mt.OCI_INDEX, "digest": f"sha256:{sha(index)}", "size": len(index)}
    entry = [{"Config": config_name, "RepoTags": ["app:2"], "Layers": [layer_name]}]
    members[3:] = [
        (f"blobs/sha256/{sha(index)}", index),
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()),
        ("manifest.json", json.dumps(entry).encode()),
    ]
    store = Store(tmp_path / "store")
    [image] = load(store, str(write_tar(tmp_path / "c.tar", members)))
    assert image.digest == f"sha256:{sha(manifest)}"
    assert image.names == ("docker.io/library/app:2",)
    assert store.image("app:2").manifest.layers[0].media_type == mt.OCI_LAYER_GZIP


def test_docker_archive_to_a_pipe_is_the_same_bytes(tmp_path: Path) -> None:
    """Without seeking, the layer's size comes from a first pass: the same archive results."""
    store = Store(tmp_path / "store")
    load(store, str(write_tar(tmp_path / "a.tar", oci_members())))
    src = StoreSource(store, "app:1")
    sel = select(src, False)

    def written(seekable: bool) -> bytes:
        buf = io.BytesIO()
        tar = TarWriter(buf, seekable)
        writer = DockerArchiveWriter(tar)
        writer.add(sel.manifests[0], src.open_blob, [store.resolve("app:1")])
        writer.finish()
        tar.finish()
        return buf.getvalue()

    assert written(True) == written(False)


def test_oci_archive_round_trip_keeps_digests(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    load(store, str(write_tar(tmp_path / "a.tar", oci_members())))
    src = StoreSource(store, "app:1")
    sel = select(src, True)
    path = tmp_path / "o.tar"
    with output(str(path)) as tar:
        writer = OciArchiveWriter(tar)
        writer.add(sel.top, sel.manifests, src.open_blob, ["docker.io/library/app:1"])
        writer.finish()
    other = Store(tmp_path / "other")
    [image] = load(other, str(path))
    assert image.digest == src.descriptor.digest
    assert image.names == ("docker.io/library/app:1",)


def test_a_bare_tag_ref_name_leaves_the_image_unnamed(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    [image] = load(store, str(write_tar(tmp_path / "a.tar", oci_members(ref="latest"))))
    assert image.names == ()
    assert [d.ref_name for d in store.entries()] == [None]


def test_compressed_archives_and_streams_load(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    plain = write_tar(tmp_path / "a.tar", docker_members())
    gz = tmp_path / "a.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert load(store, str(gz))[0].names == ("docker.io/library/app:1",)
    with open(plain, "rb") as f:
        assert load(store, None, f)[0].names == ("docker.io/library/app:1",)
    assert not list((store.root / "ingest").iterdir())  # the spooled copies went


def test_symlinks_nobody_names_are_ignored(tmp_path: Path) -> None:
    """skopeo's docker-archive has `<id>/layer.tar` links to the real member: never read."""
    members = docker_members()
    members.insert(0, ("legacy/layer.tar", "symlink", f"../{members[0][0]}"))
    store = Store(tmp_path / "store")
    assert load(store, str(write_tar(tmp_path / "a.tar", members)))[0].names


# --- damaged and hostile archives: refused, the store untouched ----------------------------


def _huge_pax(path: Path) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    return path


def _truncated(path: Path) -> Path:
    write_tar(path, docker_members())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _mismatching_docker25(path: Path) -> Path:
    members = oci_members()
    name, blob = members[0]
    members[0] = (name, blob[:-1] + bytes([blob[-1] ^ 1]))
    return write_tar(path, members)


def _missing_oci_blob(path: Path) -> Path:
    return write_tar(path, oci_members()[1:])  # the layer named by the manifest is not there


def _wrong_layer(path: Path) -> Path:
    members = docker_members()
    members[0] = (members[0][0], LAYER2)  # not the diff_id the config says
    return write_tar(path, members)


HOSTILE = {
    "climbs out": (
        lambda p, t: write_tar(p, [("../escaped", b"x"), *docker_members()]),
        "climbs out",
    ),
    "absolute": (
        lambda p, t: write_tar(p, [(str(t / "escaped"), b"x"), *docker_members()]),
        "absolute",
    ),
    "symlink layer": (
        lambda p, t: write_tar(
            p,
            [
                (f"{sha(LAYER)}/layer.tar", "symlink", str(t / "escaped")),
                *docker_members()[1:],
            ],
        ),
        "is a symlink; links are not followed",
    ),
    "hard link layer": (
        lambda p, t: write_tar(
            p,
            [
                ("real", LAYER),
                (f"{sha(LAYER)}/layer.tar", "hardlink", "real"),
                *docker_members()[1:],
            ],
        ),
        "is a hardlink",
    ),
    "missing layer": (lambda p, t: write_tar(p, docker_members()[1:]), "is not in the archive"),
    "missing oci blob": (lambda p, t: _missing_oci_blob(p), "not in the archive"),
    "wrong layer": (lambda p, t: _wrong_layer(p), "digest mismatch"),
    "damaged blob": (lambda p, t: _mismatching_docker25(p), "digest mismatch"),
    "huge manifest.json": (
        lambda p, t: write_tar(p, [("manifest.json", b" " * (5 << 20))]),
        "over the 4 MiB limit",
    ),
    "huge header": (lambda p, t: _huge_pax(p), "over the limit"),
    "truncated": (lambda p, t: _truncated(p), "truncated"),
    "twice": (
        lambda p, t: write_tar(p, [*docker_members(), ("manifest.json", b"[]")]),
        "appears twice",
    ),
    "not json": (lambda p, t: write_tar(p, [("manifest.json", b"{nope")]), "not valid JSON"),
    "no image": (lambda p, t: write_tar(p, [("manifest.json", b"[]")]), "holds no image"),
    "linked manifest.json": (
        lambda p, t: write_tar(p, [("manifest.json", "symlink", str(t / "escaped"))]),
        "links are not followed",
    ),
    "not a tar": (lambda p, t: (p.write_bytes(b"hello" * 300), p)[1], "not a readable tar archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_the_store_unchanged(
    case: str, loaded_store: Store, tmp_path: Path
) -> None:
    make, message = HOSTILE[case]
    path = make(tmp_path / "bad.tar", tmp_path)
    before = snapshot(loaded_store.root)
    with pytest.raises(ImgtoolError) as e:
        load(loaded_store, str(path))
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert snapshot(loaded_store.root) == before
    assert not (tmp_path / "escaped").exists()


def test_a_later_bad_image_leaves_the_earlier_ones_out_too(
    loaded_store: Store, tmp_path: Path
) -> None:
    """One transaction: the good image's blobs are not kept when the second one fails."""
    good = docker_members([LAYER], "good:1")
    bad = docker_members([LAYER3], "bad:1")
    bad[0] = (bad[0][0], b"not the layer")
    entries = json.loads(good[-1][1]) + json.loads(bad[-1][1])
    members = [*good[:-1], *bad[:-1], ("manifest.json", json.dumps(entries).encode())]
    before = snapshot(loaded_store.root)
    with pytest.raises(DigestMismatch):
        load(loaded_store, str(write_tar(tmp_path / "two.tar", members)))
    assert snapshot(loaded_store.root) == before


def test_reader_never_opens_links_and_bounds_members(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "t.tar", [("a", b"1"), ("b", "symlink", "a"), ("d", "dir")])
    with TarReader(path, "t") as reader:
        assert reader.read("a", 10) == b"1"
        with pytest.raises(SpecError, match="symlink"):
            reader.open("b")
        with pytest.raises(SpecError, match="not a regular file"):
            reader.open("d")
        with pytest.raises(SpecError, match="over the"):
            reader.read("a", 0)


# --- writing -------------------------------------------------------------------------------


def test_unsized_member_gets_its_header_patched(tmp_path: Path) -> None:
    path = tmp_path / "w.tar"
    with output(str(path)) as tar:
        size = tar.add_unsized("blobs/sha256/" + "a" * 64, lambda write: write(b"x" * 1000))
        tar.add_bytes("after", b"y")
    assert size == 1000
    with tarfile.open(path) as t:
        assert [(m.name, m.size) for m in t] == [("blobs/sha256/" + "a" * 64, 1000), ("after", 1)]
    assert path.stat().st_size % (20 * 512) == 0


def test_failed_output_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError), output(str(out / "w.tar")) as tar:
        tar.add_bytes("a", b"1")
        raise RuntimeError("boom")
    assert list(out.iterdir()) == []


# --- transports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, want",
    [
        ("docker://localhost:5000/a/b:1", ("docker", "localhost:5000/a/b:1", "")),
        ("oci:/tmp/x", ("oci", "/tmp/x", "")),
        ("oci:/tmp/x:latest", ("oci", "/tmp/x", "latest")),
        ("docker-archive:a.tar:busybox:latest", ("docker-archive", "a.tar", "busybox:latest")),
        ("oci-archive:a.tar:@1", ("oci-archive", "a.tar", "@1")),
        ("store:busybox", ("store", "busybox", "")),
        ("localhost:5000/a:1", ("store", "localhost:5000/a:1", "")),
        ("busybox", ("store", "busybox", "")),
    ],
)
def test_locations_parse(text: str, want: tuple[str, str, str]) -> None:
    loc = Location.parse(text)
    assert (loc.transport, loc.path, loc.ref) == want
    assert Location.parse(str(loc)) == loc


@pytest.mark.parametrize("text", ["dir:/tmp/x", "containers-storage:busybox", "oci:"])
def test_locations_refused(text: str) -> None:
    with pytest.raises(InvalidReference):
        Location.parse(text)


class _Fake(Source):
    def __init__(self, top: oci.Index, docs: dict[str, oci.Manifest]) -> None:
        self._top, self._docs = top, docs
        self.label = "fake"

    def top(self) -> oci.Index:
        return self._top

    def document(self, desc: oci.Descriptor) -> oci.Manifest:
        return self._docs[desc.digest]

    def has(self, desc: oci.Descriptor) -> bool:
        return desc.digest in self._docs


def _index() -> tuple[oci.Index, dict[str, oci.Manifest]]:
    docs, children = {}, []
    for arch in ("amd64", "arm64"):
        cfg = oci.Descriptor(mt.OCI_CONFIG, "sha256:" + sha(arch.encode()), 3)
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": cfg.to_dict(),
                "layers": [],
            }
        ).encode()
        m = oci.Manifest.from_json(raw)
        docs[m.digest] = m
        children.append(
            oci.Descriptor(
                mt.OCI_MANIFEST, m.digest, len(raw), platform=oci.Platform("linux", arch)
            )
        )
    return oci.Index.build(children), docs


def test_select_one_platform_all_or_what_is_there() -> None:
    index, docs = _index()
    one = select(_Fake(index, docs), False, oci.Platform.parse("linux/arm64"))
    assert one.index_digest == index.digest and len(one.manifests) == 1
    assert one.top.config.digest == "sha256:" + sha(b"arm64")  # type: ignore[union-attr]
    assert len(select(_Fake(index, docs), True).manifests) == 2
    assert select(_Fake(index, docs), None).top is index
    partial = {k: v for k, v in docs.items() if v.config.digest.endswith(sha(b"amd64"))}
    picked = select(_Fake(index, partial), None, oci.Platform.parse("linux/amd64"))
    assert picked.top is not index  # not all there: the host's platform only


# --- the registry's pipe -------------------------------------------------------------------


def test_pipe_skips_what_a_restarted_download_sends_again() -> None:
    def run(sink: Pipe) -> None:
        sink.write(b"abc")
        sink.restart()  # a server that ignored Range: everything again
        sink.write(b"ab")
        sink.write(b"cdef")

    pipe = Pipe(6, run)  # type: ignore[arg-type]
    assert len(pipe) == 6
    assert pipe.read(4) == b"abcd"
    assert pipe.read() == b"ef"
    assert len(pipe) == 0


def test_pipe_raises_the_download_error_in_the_reader() -> None:
    def run(sink: Pipe) -> None:
        sink.write(b"ab")
        raise DigestMismatch("blob", "a", "b")

    pipe = Pipe(10, run)  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch):
        pipe.read()


def test_pipe_closed_early_stops_the_download() -> None:
    import threading

    stopped = threading.Event()

    def run(sink: Pipe) -> None:
        try:
            while True:
                sink.write(b"x" * 65536)
        finally:
            stopped.set()

    pipe = Pipe(1 << 40, run)  # type: ignore[arg-type]
    pipe.read(10)
    pipe.close()
    assert stopped.wait(5)
    assert os.environ  # the test process carries on
