"""The store's lower layer of mount points (sandbox/mountpoints.py): made once, and stacked on
an image only where it changes nothing the container sees."""

from __future__ import annotations

import os
import shutil
import stat
import struct
from pathlib import Path

import pytest

from imgtool.sandbox import mountpoints


def test_the_layer_holds_the_mount_points_with_fixed_modes(tmp_path: Path) -> None:
    os.umask(0o077)  # the umask must not leak into what every container stands on
    try:
        path = Path(mountpoints.layer(str(tmp_path)))
    finally:
        os.umask(0o022)
    assert path == tmp_path / mountpoints.NAME
    modes = {str(p.relative_to(path)): stat.S_IMODE(p.lstat().st_mode) for p in path.rglob("*")}
    assert modes == {
        "dev": 0o755,
        "proc": 0o555,
        "sys": 0o555,
        "etc": 0o755,
        "etc/hosts": 0o644,
        "etc/hostname": 0o644,
        "etc/resolv.conf": 0o644,
    }
    assert all((path / "etc" / name).stat().st_size == 0 for name in mountpoints.ETC_FILES)
    assert not list((tmp_path / "tmp").iterdir())  # its temporary directory is gone


def test_the_layer_is_made_once_and_a_leftover_is_not_in_the_way(tmp_path: Path) -> None:
    first = mountpoints.layer(str(tmp_path))
    marker = Path(first) / "etc" / "hosts"
    inode = marker.stat().st_ino
    leftover = tmp_path / "tmp" / f"{mountpoints.NAME}.{os.getpid()}"
    (leftover / "etc").mkdir(parents=True)  # a killed run with our PID, half-way
    assert mountpoints.layer(str(tmp_path)) == first
    assert marker.stat().st_ino == inode  # not made again
    (tmp_path / mountpoints.NAME).rename(tmp_path / "old")
    assert mountpoints.layer(str(tmp_path)) == first  # made again, in a directory of its own
    assert mountpoints.fits([], first)
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [leftover.name]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: (p / "etc" / "passwd").write_text("root::0:0::/:/bin/sh\n"),
        lambda p: (p / "etc" / "hosts").write_text("10.0.0.1 registry\n"),
        lambda p: (p / "dev" / "null").mkdir(),
        lambda p: (p / "tmp").mkdir(),
        lambda p: (p / "proc").chmod(0o777),
        lambda p: ((p / "sys").rmdir(), (p / "sys").symlink_to("/sys")),
        lambda p: (
            (p / "etc" / "hostname").unlink(),
            os.link(p / "etc" / "hosts", p / "etc" / "hostname"),
        ),
    ],
    ids=[
        "planted-passwd",
        "hosts-written",
        "dev-not-empty",
        "extra-dir",
        "mode",
        "symlink",
        "hard-link",
    ],
)
def test_a_layer_not_as_made_is_left_out(tmp_path: Path, tamper: object) -> None:
    """Anything in the shared layer would show in every container: only exactly what
    `layer` makes is stacked."""
    ours = Path(mountpoints.layer(str(tmp_path)))
    image = tmp_path / "image"
    image.mkdir()
    assert mountpoints.fits([str(image)], str(ours))
    tamper(ours)  # type: ignore[operator]
    assert not mountpoints.fits([str(image)], str(ours))


def test_a_layer_made_meanwhile_by_another_run_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename

    def racing(src: str, dst: str) -> None:
        shutil.copytree(src, dst)  # another run's layer, renamed into place just before ours
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", racing)
    assert mountpoints.layer(str(tmp_path)) == str(tmp_path / mountpoints.NAME)
    assert not list((tmp_path / "tmp").iterdir())  # ours is gone


@pytest.fixture
def ours(tmp_path: Path) -> str:
    return mountpoints.layer(str(tmp_path / "layers"))


def image_layer(tmp_path: Path, name: str = "image") -> Path:
    layer = tmp_path / name
    (layer / "etc").mkdir(parents=True)
    (layer / "etc").chmod(0o755)
    (layer / "bin").mkdir()
    return layer


def test_an_image_without_conflicts_takes_the_layer(tmp_path: Path, ours: str) -> None:
    plain = image_layer(tmp_path)
    (plain / "etc" / "hosts").write_text("127.0.0.1 image\n")  # covered by the bind mount
    (plain / "proc").mkdir(mode=0o700)  # covered by procfs: its mode is never seen
    upper = image_layer(tmp_path, "upper")
    os.mknod(upper / "etc" / "resolv.conf", stat.S_IFCHR, 0)  # a whiteout
    os.mknod(upper / "sys", stat.S_IFCHR, 0)
    assert mountpoints.fits([str(plain), str(upper)], ours)
    assert mountpoints.fits([], ours)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda layer: (layer / "etc").chmod(0o750), id="etc-of-another-mode"),
        pytest.param(lambda layer: os.chown(layer / "etc", 0, 4), id="etc-of-another-group"),
        pytest.param(
            lambda layer: (layer / "etc" / "hosts").symlink_to("/etc/passwd"), id="hosts-symlink"
        ),
        pytest.param(lambda layer: (layer / "etc" / "hostname").mkdir(), id="hostname-a-dir"),
        pytest.param(lambda layer: (layer / "proc").symlink_to("/proc"), id="proc-symlink"),
        pytest.param(lambda layer: (layer / "dev").write_text(""), id="dev-a-file"),
    ],
)
def test_an_image_with_a_conflict_goes_without_it(tmp_path: Path, ours: str, spoil) -> None:
    layer = image_layer(tmp_path)
    spoil(layer)
    below = image_layer(tmp_path, "below")
    assert not mountpoints.fits([str(below), str(layer)], ours)


def test_a_symlinked_etc_is_not_followed_to_the_host(
    tmp_path: Path, ours: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = tmp_path / "image"
    layer.mkdir()
    (layer / "etc").symlink_to("/etc")
    looked: list[object] = []
    real_stat = os.stat

    def watching(path, *args, dir_fd=None, **kwargs):
        where = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
        looked.append(os.path.join(where, str(path)))
        return real_stat(path, *args, dir_fd=dir_fd, **kwargs)

    monkeypatch.setattr(os, "stat", watching)
    assert not mountpoints.fits([str(layer)], ours)
    assert looked  # ours was looked at
    assert not any(p.startswith("/etc/") for p in looked)  # never below the image's link


def test_a_damaged_layer_of_ours_is_not_used(tmp_path: Path, ours: str) -> None:
    (Path(ours) / "etc" / "hosts").unlink()
    (Path(ours) / "etc" / "hostname").unlink()
    (Path(ours) / "etc" / "resolv.conf").unlink()
    (Path(ours) / "etc").rmdir()
    (Path(ours) / "etc").write_text("")
    assert not mountpoints.fits([str(image_layer(tmp_path))], ours)


def test_an_etc_with_xattrs_goes_without_it(tmp_path: Path, ours: str) -> None:
    """The merged /etc would show the layer's (none): a default ACL decides the modes of the
    files made in /etc, so one on the image's /etc must stay visible."""
    acl_default = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((1, 7), (4, 0), (0x20, 0))
    )
    from imgtool import whiteout

    assert mountpoints.OVERLAY_XATTR_PREFIXES == whiteout.OVERLAY_XATTR_PREFIXES
    layer = image_layer(tmp_path)
    os.setxattr(layer / "etc", "trusted.overlay.opaque", b"y")  # overlay's own: not shown
    assert mountpoints.fits([str(layer)], ours)
    os.setxattr(layer / "etc", "system.posix_acl_default", acl_default)
    assert not mountpoints.fits([str(layer)], ours)


def test_the_layer_is_left_out_where_the_overlay_options_would_pass_a_page() -> None:
    """mount(2) copies one page of options and cuts the rest: the work dir's path cut short
    was an ENOENT for an image that ran without the layer."""
    from imgtool.errors import SandboxError
    from imgtool.sandbox import container
    from imgtool.sandbox.spec import SandboxSpec

    cdir = "/var/lib/imgtool/containers/" + "c" * 64

    def options(layer_count: int) -> str:
        lowers = [f"l/{i:012x}" for i in range(layer_count)] + [mountpoints.NAME]
        spec = SandboxSpec(["true"], lowers, "/", f"{cdir}/upper", f"{cdir}/work", "/r")
        return container._overlay_options(spec)

    assert options(200).startswith(f"lowerdir={mountpoints.NAME}:l/")
    assert len(options(258)) <= container.OVERLAY_OPTIONS_MAX  # it fits without the layer
    assert f"{mountpoints.NAME}:" not in options(258)
    with pytest.raises(SandboxError, match="259 layers: more than one overlay mount can name"):
        options(259)
