"""`imgtool build -`: stdin is the Containerfile (an empty context) or a tar of the context."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from imgtool.store import Store
from tests.conftest import REPO, imgtool
from tests.support.registry import Registry

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (namespaces, mounts)"),
]


def _build_from_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "imgtool", "build", *args, "-"],
        input=data,
        capture_output=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ),
    )


def _tar(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, target in (links or {}).items():  # first: what follows may go through them
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            t.addfile(ti)
        for name, data in entries.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_containerfile_on_stdin_has_an_empty_context(hub: Registry, store: Store) -> None:
    cf = b"FROM busybox\nCOPY . /ctx/\nRUN ls -A /ctx | wc -l > /count\n"
    r = _build_from_stdin(cf, "-t", "stdin-cf:1")
    assert r.returncode == 0, r.stderr.decode()
    assert imgtool("run", "--rm", "stdin-cf:1", "cat", "/count").out.strip() == "0"
    r = _build_from_stdin(b"FROM busybox\nCOPY Containerfile /x\n")
    assert r.returncode != 0 and b"Containerfile" in r.stderr, r.stderr.decode()
    r = _build_from_stdin(cf, "-f", "Containerfile")
    assert r.returncode != 0 and b"-f cannot name" in r.stderr, r.stderr.decode()


@pytest.mark.parametrize("packing", ["plain", "gzip", "zstd"])
def test_tar_on_stdin_is_the_context(hub: Registry, store: Store, packing: str) -> None:
    raw = _tar(
        {
            "Containerfile": b"FROM busybox\nCOPY data/ /data/\nCMD cat /data/f\n",
            "data/f": f"from a {packing} tar\n".encode(),
            "Other.Containerfile": b"FROM busybox\nCOPY data/f /other\nCMD cat /other\n",
        }
    )
    packed = {
        "plain": raw,
        "gzip": gzip.compress(raw),
        "zstd": zstandard.ZstdCompressor().compress(raw),
    }[packing]
    r = _build_from_stdin(packed, "-t", f"stdin-tar:{packing}")
    assert r.returncode == 0, r.stderr.decode()
    assert imgtool("run", "--rm", f"stdin-tar:{packing}").out == f"from a {packing} tar\n"
    r = _build_from_stdin(packed, "-f", "Other.Containerfile", "-t", "stdin-tar:other")
    assert r.returncode == 0, r.stderr.decode()
    assert imgtool("run", "--rm", "stdin-tar:other").out == f"from a {packing} tar\n"
    r = _build_from_stdin(packed, "-f", "Missing")
    assert r.returncode != 0 and b"'Missing': no such file" in r.stderr, r.stderr.decode()


def test_context_tar_on_stdin_cannot_write_outside_it(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    cf = b"FROM busybox\nCOPY . /ctx/\nCMD find /ctx -type f\n"
    for entries, links in (
        ({"Containerfile": cf, f"../../../../../../../..{target}/dotdot": b"x"}, {}),
        ({"Containerfile": cf, "out/link-through": b"x"}, {"out": str(target)}),
        ({"Containerfile": cf, f"{target}/absolute": b"x"}, {}),
    ):
        r = _build_from_stdin(_tar(entries, links), "-t", "stdin-escape:1")
        if r.returncode == 0:  # kept inside the context (as a layer's entries are), or refused
            found = imgtool("run", "--rm", "stdin-escape:1").out.split()
            assert {os.path.basename(p) for p in found} <= {os.path.basename(n) for n in entries}
    assert list(target.iterdir()) == []
    strays = [p for n in ("dotdot", "absolute") for p in tmp_path.rglob(n)]
    assert [p for p in strays if "/ctx/" not in str(p)] == []  # only in the image's /ctx
