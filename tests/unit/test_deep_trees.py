"""Analysis of deep and huge layers (imgtool layers/diff/check): no recursion over a path's
depth, no backtracking over its components, no header read whole into memory."""

from __future__ import annotations

import io
import tarfile
import time

import pytest

from imgtool import filetree
from imgtool.errors import LayerError
from imgtool.layer.index import read_index

DEEP = 3000


def _tar(names: list[str], kind: bytes = tarfile.DIRTYPE) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            tar.addfile(ti)
    buf.seek(0)
    return buf


@pytest.mark.parametrize(
    "pattern,path,want",
    [
        ("**", "a/b/c", True),
        ("**/c", "c", True),
        ("a/**/c", "a/c", True),
        ("a/**/c", "a/x/y/c", True),
        ("a/**/c", "a/x/y/d", False),
        ("a/*/c", "a/x/y/c", False),
        ("/usr/**/*.so", "usr/lib/x86_64/libc.so", True),
        ("*.so", "lib/libc.so", False),
        ("**/**", "a", True),
    ],
)
def test_glob_match(pattern: str, path: str, want: bool) -> None:
    assert filetree.glob_match(pattern, path) is want


def test_glob_match_on_a_deep_path_is_quick() -> None:
    """The old matcher tried every split of the path for each `**`: O(n^3) here."""
    path = "/".join(["x", "y"] * (DEEP // 2))
    t0 = time.monotonic()
    assert not filetree.glob_match("**/x/**/y/**/z", path)
    assert filetree.glob_match("**/x/**/y", path)
    assert time.monotonic() - t0 < 2


def test_index_and_analysis_of_a_deep_layer() -> None:
    names = ["/".join(["d"] * i) for i in range(1, DEEP + 1)]
    index = read_index(_tar(names))
    assert len(index.members) == DEEP
    deeper = read_index(_tar([names[-1] + "/f"], tarfile.REGTYPE))
    whiteout = read_index(_tar(["d/.wh.d"], tarfile.REGTYPE))
    analysis = filetree.analyze([index.tree(), deeper.tree(), whiteout.tree()])
    assert list(analysis.final) == ["d"]


def test_index_refuses_a_huge_pax_header() -> None:
    with pytest.raises(LayerError, match="tar header of") as e:
        read_index(_tar(["p" * (2 << 20)]))
    assert "\n" not in str(e.value)
