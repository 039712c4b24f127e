"""inroot: every walk stays inside its root, whatever the root's symlinks say."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from imgtool import inroot


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A root full of links that point out of it, and a 'host' directory beside it."""
    root, host = tmp_path / "root", tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (host / "secret").write_text("host")
    (root / "etc").mkdir()
    (root / "etc" / "secret").write_text("image")
    (root / "abs").symlink_to(host)  # absolute: /<tmp>/host means <root>/<tmp>/host
    (root / "up").symlink_to("../../host")  # relative, climbing above the root
    (root / "toetc").symlink_to("/etc")
    (root / "loop").symlink_to("loop")
    (root / "file").write_text("x")
    (root / "dangling").symlink_to("/made/here")
    return root, host


def _where(fd: int) -> str:
    try:
        return os.readlink(inroot.fd_path(fd))
    finally:
        os.close(fd)


def test_symlinks_resolve_inside_the_root(tree: tuple[Path, Path]) -> None:
    root, host = tree
    rfd = inroot.open_root(str(root))
    try:
        assert _where(inroot.walk(rfd, "toetc/secret")) == str(root / "etc" / "secret")
        assert _where(inroot.walk(rfd, "toetc/../etc/secret")) == str(root / "etc" / "secret")
        assert _where(inroot.walk(rfd, "/../../etc/./secret")) == str(root / "etc" / "secret")
        with pytest.raises(FileNotFoundError):
            inroot.walk(rfd, "abs/secret")  # <root>/<tmp>/host does not exist
        with pytest.raises(FileNotFoundError):
            inroot.walk(rfd, "up/secret")  # ../../host from / is /host, in the root
        assert _where(inroot.walk(rfd, "toetc", follow_last=False)) == str(root / "toetc")
    finally:
        os.close(rfd)


def test_errors(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    rfd = inroot.open_root(str(root))
    try:
        with pytest.raises(OSError) as e:
            inroot.walk(rfd, "loop/x")
        assert e.value.errno == errno.ELOOP
        with pytest.raises(NotADirectoryError):
            inroot.walk(rfd, "file/x")
        with pytest.raises(OSError) as e:
            inroot.walk_parent(rfd, "/")
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(rfd)


def test_mkdirs_creates_inside_the_root(tree: tuple[Path, Path]) -> None:
    root, host = tree
    rfd = inroot.open_root(str(root))
    try:
        fd = inroot.mkdirs(rfd, "up/new/deeper")
        assert _where(fd) == str(root / "host" / "new" / "deeper")
        fd = inroot.mkdirs(rfd, "abs/new")
        assert _where(fd) == str(root) + str(host) + "/new"
        assert sorted(os.listdir(host)) == ["secret"]  # nothing appeared on the "host"
    finally:
        os.close(rfd)


def test_ensure_file_follows_links_inside(tree: tuple[Path, Path]) -> None:
    root, host = tree
    rfd = inroot.open_root(str(root))
    try:
        assert _where(inroot.ensure_file(rfd, "dangling")) == str(root / "made" / "here")
        assert _where(inroot.ensure_file(rfd, "up/secret")) == str(root / "host" / "secret")
        assert _where(inroot.ensure_file(rfd, "toetc/secret")) == str(root / "etc" / "secret")
        (root / "etc" / "rel").symlink_to("../../../host/secret")
        assert _where(inroot.ensure_file(rfd, "etc/rel")) == str(root / "host" / "secret")
        with pytest.raises(IsADirectoryError):
            inroot.ensure_file(rfd, "etc")
        assert (host / "secret").read_text() == "host"
        assert sorted(os.listdir(host)) == ["secret"]
    finally:
        os.close(rfd)


def test_deep_paths_do_not_recurse(tmp_path: Path) -> None:
    depth = 3000
    rfd = inroot.open_root(str(tmp_path))
    try:
        os.close(inroot.mkdirs(rfd, "/".join(["d"] * depth)))
        os.close(inroot.walk(rfd, "/".join(["d"] * depth + [".."] * depth + ["d"])))
    finally:
        os.close(rfd)
        # pytest's own clean-up recurses: take the chain down one level at a time
        top = tmp_path / "d"
        while top.exists():
            if (top / "d").exists():
                (top / "d").rename(tmp_path / "next")
            top.rmdir()
            if (tmp_path / "next").exists():
                (tmp_path / "next").rename(top)
