"""inroot's tree walks: any depth without recursion or a descriptor per level, and never
through a symlink."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtool import inroot

DEEP = 3000  # levels: over Python's recursion limit and over the 1024 descriptors of ulimit -n


@pytest.fixture(autouse=True)
def _no_deep_tree_left(tmp_path: Path) -> Iterator[None]:
    """pytest's clean-up of old temporary directories (shutil.rmtree) fails on deep trees."""
    yield
    inroot.remove_tree(tmp_path / "top")


def deep_tree(top: Path, depth: int = DEEP) -> Path:
    """`top/d/d/.../d` with a file at every level; made with relative mkdir/chdir because
    the whole path is longer than PATH_MAX."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
                f.write("x")
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return top


def test_remove_tree_deeper_than_the_stack_and_path_max(tmp_path: Path) -> None:
    top = deep_tree(tmp_path / "top")  # shutil.rmtree: RecursionError (Python 3.11)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 256), hard))  # far under the depth
    try:
        inroot.remove_tree(top)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not top.exists() and not os.path.lexists(top)


def test_remove_never_follows_symlinks(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("host")
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    (top / "a" / "up").symlink_to(host)
    (top / "a" / "abs").symlink_to("/")
    (top / "link").symlink_to(host)
    inroot.remove_tree(top)
    assert not top.exists() and (host / "keep").read_text() == "host"
    (tmp_path / "only").symlink_to(host)
    inroot.remove_tree(tmp_path / "only")  # a symlink itself goes, not what it names
    assert not (tmp_path / "only").exists() and (host / "keep").exists()
    inroot.remove_tree(tmp_path / "missing")  # nothing there: nothing to do


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.left: list[str] = []

    def names(self, fd: int, path: str) -> list[str]:
        return sorted(os.listdir(fd))

    def entry(self, fd: int, path: str, name: str) -> bool:
        rel = f"{path}/{name}" if path else name
        self.seen.append(rel)
        return os.path.isdir(f"{inroot.fd_path(fd)}/{name}") and not os.path.islink(
            f"{inroot.fd_path(fd)}/{name}"
        )

    def leave(self, fd: int, path: str, name: str) -> None:
        self.left.append(f"{path}/{name}" if path else name)


def test_walk_tree_is_depth_first_in_order(tmp_path: Path) -> None:
    top = tmp_path / "top"
    for p in ("b/y", "a/z/q", "a/x", "c"):
        (top / p).parent.mkdir(parents=True, exist_ok=True)
        (top / p).write_text("")
    (top / "a" / "l").symlink_to("/")
    rec = _Recorder()
    with inroot.opened(os.open(top, os.O_RDONLY | os.O_DIRECTORY)) as fd:
        inroot.walk_tree(fd, rec)
    assert rec.seen == ["a", "a/l", "a/x", "a/z", "a/z/q", "b", "b/y", "c"]
    assert rec.left == ["a/z", "a", "b"]


def test_walk_tree_deep(tmp_path: Path) -> None:
    top = deep_tree(tmp_path / "top")
    rec = _Recorder()
    with inroot.opened(os.open(top, os.O_RDONLY | os.O_DIRECTORY)) as fd:
        inroot.walk_tree(fd, rec)
    assert len(rec.seen) == 2 * DEEP and len(rec.left) == DEEP
    inroot.remove_tree(top)
