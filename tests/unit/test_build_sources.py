"""What the builder reads and writes for COPY, ADD and RUN mounts stays inside its own root:
sources resolved in the context or a stage (sourcetree), copies made in the layer's directory
(copier), lookups in a stage's stacked layers (layered)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from imgtool import inroot, whiteout
from imgtool.builder import sourcetree
from imgtool.builder.copier import Ownership, copy_entry, copy_tree
from imgtool.builder.layered import LayerStack

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and owners need root")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[sourcetree.Root, Path]:
    """A context full of links that point out of it, and a 'host' directory beside it."""
    ctx, host = tmp_path / "ctx", tmp_path / "host"
    ctx.mkdir()
    host.mkdir()
    (host / "secret").write_text("host")
    (ctx / "d").mkdir()
    (ctx / "d" / "f").write_text("inside")
    (ctx / "abs").symlink_to(host)  # absolute: means <ctx>/<tmp>/host
    (ctx / "sub").mkdir()
    (ctx / "sub" / "up").symlink_to("../../host")  # relative, climbing above the root
    (ctx / "slash").symlink_to("/")
    (ctx / "tod").symlink_to("/d")
    (ctx / "loop").symlink_to("loop")
    root = sourcetree.Root(ctx, "the build context")
    yield root, host
    root.close()


def test_resolve_stays_in_the_root(tree: tuple[sourcetree.Root, Path]) -> None:
    root, host = tree
    assert sourcetree.resolve(root.fd, "tod/f") == ("d", "f")
    assert sourcetree.resolve(root.fd, "slash/d/../../../d/f") == ("d", "f")
    assert sourcetree.resolve(root.fd, "tod", follow_last=False) == ("tod",)
    for path in ("abs/secret", "sub/up", f"slash{host}/secret", "d/f/x"):
        with pytest.raises((FileNotFoundError, NotADirectoryError)):
            sourcetree.resolve(root.fd, path)
    with pytest.raises(OSError) as e:
        sourcetree.resolve(root.fd, "loop")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError):
        sourcetree.resolve(root.fd, "d/\0")
    (host.parent / "ctx" / "host").mkdir()
    assert sourcetree.resolve(root.fd, "sub/up") == ("host",)  # clamped at the root


def test_the_symlink_that_leads_out_is_named(tree: tuple[sourcetree.Root, Path]) -> None:
    root, host = tree
    assert sourcetree.escaping_link(root.fd, "abs/secret") == ("abs", str(host))
    assert sourcetree.escaping_link(root.fd, "sub/up/secret") == ("sub/up", "../../host")
    assert sourcetree.escaping_link(root.fd, "tod/missing") == ("tod", "/d")
    assert sourcetree.escaping_link(root.fd, "d/missing") is None


def test_wildcards_match_below_a_resolved_prefix_without_following_links(
    tree: tuple[sourcetree.Root, Path],
) -> None:
    root, _ = tree
    assert sourcetree.glob(root.fd, "tod/*") == ["d/f"]
    assert sourcetree.glob(root.fd, "*/f") == ["d/f"]  # `tod` is a link: not descended
    assert sourcetree.glob(root.fd, "abs/*") == []
    assert sourcetree.glob(root.fd, "plain/name") == ["plain/name"]


def test_tree_digest_sees_content_and_skips_what_is_ignored(
    tree: tuple[sourcetree.Root, Path], tmp_path: Path
) -> None:
    root, _ = tree
    first = sourcetree.tree_digest(root.fd, ())
    (tmp_path / "ctx" / "d" / "f").write_text("changed")
    assert sourcetree.tree_digest(root.fd, ()) != first
    skip_d = sourcetree.tree_digest(root.fd, (), lambda c: c[0] == "d")
    (tmp_path / "ctx" / "d" / "f").write_text("changed again")
    assert sourcetree.tree_digest(root.fd, (), lambda c: c[0] == "d") == skip_d


@root_only
def test_copies_keep_links_and_nodes_and_never_read_them(tmp_path: Path) -> None:
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for d in (src, dst, outside):
        d.mkdir()
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (src / "link").symlink_to(outside)
    (src / "suid").write_text("#!/bin/sh\n")
    os.chmod(src / "suid", 0o4755)
    root = sourcetree.Root(src, "a stage")
    try:
        with (
            inroot.opened(inroot.open_root(str(dst))) as d,
            sourcetree.entry_of(root.fd, ()) as top,
        ):
            copy_tree(root.fd, top, d, "/out", Ownership(1000, 1000), None)
            # a later source writes through the copied link: inside dst, never to `outside`
            with sourcetree.entry_of(root.fd, ("suid",)) as f:
                copy_entry(f, d, "/out/link/again", Ownership())
    finally:
        root.close()
    st = os.lstat(dst / "out" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert os.readlink(dst / "out" / "link") == str(outside)
    st = os.lstat(dst / "out" / "suid")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (1000, 0o4755)  # chown before chmod
    assert os.listdir(outside) == []
    assert (dst / str(outside).lstrip("/") / "again").read_text() == "#!/bin/sh\n"


def _layer(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir()
    return d


@root_only
def test_layer_stack_merges_like_overlayfs_inside_the_image(tmp_path: Path) -> None:
    host = _layer(tmp_path, "host")
    (host / "secret").write_text("host")
    low, mid, top = (_layer(tmp_path, n) for n in ("low", "mid", "top"))
    (low / "etc").mkdir()
    (low / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (low / "a").mkdir()
    (low / "a" / "gone").write_text("x")
    (low / "c").mkdir()
    (low / "c" / "old").write_text("x")
    (mid / "a").mkdir()
    os.mknod(mid / "a" / "gone", stat.S_IFCHR, 0)  # a whiteout
    (mid / "alias").symlink_to("etc")  # the directory comes from another layer
    (mid / "hostlink").symlink_to(host)
    (top / "c").mkdir()
    os.setxattr(top / "c", whiteout.OVERLAY_OPAQUE_XATTR, b"y")
    (top / "c" / "new").write_text("x")
    stack = LayerStack([low, mid, top])
    assert stack.read("/alias/passwd") == b"root:x:0:0::/root:/bin/sh\n"
    found = stack.lookup("/alias/passwd")
    assert found.comps == ("etc", "passwd") and found.layer == 0
    assert stack.lookup("/a/gone").st is None
    assert stack.lookup("/c/old").st is None and stack.lookup("/c/new").st is not None
    missing = stack.lookup("/hostlink/secret")
    assert missing.st is None and missing.comps == (*Path(host).parts[1:], "secret")
    assert stack.read("/hostlink/secret") is None
    assert stack.lookup("/alias/../../../etc").comps == ("etc",)
