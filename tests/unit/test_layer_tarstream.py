"""The lean tar reader the applier uses: the same members tarfile reads (names, link targets,
owners, modes, times, PAX records, data), in every header format, whatever sizes the source's
reads come in; stricter than tarfile on damaged headers."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgtool.errors import LayerError
from imgtool.layer import tarstream
from imgtool.layer.apply import apply_layer
from imgtool.layer.tarstream import TarReader, parse_pax

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}


class Trickle(io.RawIOBase):
    """A source whose reads return at most `step` bytes (a download arriving slowly)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def _tar(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = 1_600_000_000
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def _read_all(raw: bytes, step: int = 1 << 20) -> list[tuple[tarstream.Member, bytes]]:
    out = []
    reader = TarReader(Trickle(raw, step))  # type: ignore[arg-type]
    for m in reader:
        r, w = os.pipe()
        try:
            if m.isreg() and m.size <= 60_000:  # fits a pipe's buffer
                reader.write_data(w)
            os.close(w)
            w = -1
            out.append((m, os.read(r, 1 << 20) if m.size else b""))
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    return out


def _same_as_tarfile(raw: bytes, step: int = 1 << 20) -> None:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        expected = [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]
    got = _read_all(raw, step)
    assert len(got) == len(expected)
    for (m, data), (want, want_data) in zip(got, expected, strict=True):
        assert (m.name, m.linkname, m.uid, m.gid, m.mode) == (
            want.name,
            want.linkname,
            want.uid,
            want.gid,
            want.mode,
        )
        assert (m.isreg(), m.isdir(), m.issym(), m.islnk()) == (
            want.isreg(),
            want.isdir(),
            want.issym(),
            want.islnk(),
        )
        assert m.pax_headers == want.pax_headers
        assert data == want_data


names = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
        lambda s: "/" not in s and s not in (".", "..")
    ),
    min_size=1,
    max_size=8,
).map("/".join)


@settings(max_examples=60, deadline=None)
@given(
    name=names,
    link=names,
    fmt=st.sampled_from(["gnu", "pax"]),
    data=st.binary(max_size=3000),
    step=st.sampled_from([1, 7, 512, 4096, 1 << 20]),
    uid=st.integers(0, 1 << 40),
)
def test_members_match_tarfile(
    name: str, link: str, fmt: str, data: bytes, step: int, uid: int
) -> None:
    raw = _tar(
        [
            (_info(name, uid=uid, gid=7, mode=0o4755), data),
            (_info(name + "d", tarfile.DIRTYPE, mode=0o700), b""),
            (_info("s", tarfile.SYMTYPE, linkname=link), b""),
            (_info("h", tarfile.LNKTYPE, linkname=name), b""),
        ],
        FORMATS[fmt],
    )
    _same_as_tarfile(raw, step)


def test_ustar_prefix_global_pax_and_xattrs() -> None:
    long_dir = "d" * 120
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.pax_headers = {"comment": "global"}  # a 'g' header first
        tar.addfile(_info(f"{long_dir}/f", pax_headers={"SCHILY.xattr.user.b": "\udcff\x01"}))
    _same_as_tarfile(buf.getvalue())
    ustar = _tar([(_info(f"{long_dir}/file"), b"abc")], tarfile.USTAR_FORMAT)
    (m, data), *_ = _read_all(ustar)
    assert (m.name, data) == (f"{long_dir}/file", b"abc")


def test_large_file_across_reads(tmp_path: Path) -> None:
    data = os.urandom(3 * tarstream.READ_SIZE + 123)
    raw = _tar([(_info("big"), data), (_info("after"), b"x")])
    root = tmp_path / "root"
    root.mkdir()
    apply_layer(Trickle(raw, 100_000), root)  # type: ignore[arg-type]
    assert (root / "big").read_bytes() == data
    assert (root / "after").read_bytes() == b"x"


def test_empty_pax_value_removes_the_keyword() -> None:
    assert parse_pax(b"11 path=ab\n") == {"path": "ab"}
    raw = _tar([(_info("kept", pax_headers={"uid": ""}, uid=5), b"")], tarfile.PAX_FORMAT)
    (m, _), *_ = _read_all(raw)
    assert m.uid == 5


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda raw: raw[:512] + raw[512:1024].replace(b"second", b"sec0nd") + raw[1024:],
            "checksum",
        ),
        (lambda raw: raw[:1300], "unexpected end of data|truncated header"),
        (lambda raw: raw[: 512 + 100], "truncated header|unexpected end of data"),
        (lambda raw: b"", "empty file"),
    ],
)
def test_damaged_archives_are_refused(damage: Callable[[bytes], bytes], match: str) -> None:
    raw = _tar([(_info("first"), b""), (_info("second"), b"y" * 600)], tarfile.USTAR_FORMAT)
    with pytest.raises(LayerError, match=match):
        _read_all(damage(raw))


def test_sparse_member_is_refused() -> None:
    raw = bytearray(_tar([(_info("s"), b"")], tarfile.GNU_FORMAT))
    raw[156:157] = b"S"
    chk = sum(raw[:148]) + 256 + sum(raw[156:512])
    raw[148:156] = b"%06o\0 " % chk
    with pytest.raises(LayerError, match="sparse"):
        _read_all(bytes(raw))


def test_huge_extended_header_is_refused() -> None:
    raw = _tar([(_info("p" * (2 << 20)), b"")], tarfile.GNU_FORMAT)
    with pytest.raises(LayerError, match="tar header of"):
        _read_all(raw)
