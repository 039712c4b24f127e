"""A lower layer of mount points, shared by every container of a store, stacked on top of the
image's layers: /dev, /proc, /sys, /etc and the files /etc/hosts, /etc/hostname and
/etc/resolv.conf are then already in the container's root when the set-up mounts onto them.

Without it, the set-up makes the missing ones in the container's upper dir (busybox has none of
the directories; few images have the /etc files), which copies /etc up, and a `--rm` run removes
them all again: some fifteen file system updates a run, each one a wait on the host's disk
journal when other work writes to it.

The layer is used only where it shows exactly what the image alone would show once the mounts
are made. The directories are covered by their mounts (procfs, sysfs, a tmpfs) except /etc,
whose mode and owner are the merged directory's: an image layer's /etc must have ours. The
files are covered by their bind mounts. Anything else in an image layer at one of these paths
(a symlink, which the set-up resolves inside the root instead; a file where a directory goes,
or the reverse, which the set-up refuses) leaves the layer out, and the set-up works as before.
Image layers are looked at through directory descriptors, without following any symlink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from imgtool import inroot

NAME = "mountpoints"  # the layer's directory, beside the unpacked layers
DIRECTORIES = {"dev": 0o755, "proc": 0o555, "sys": 0o555, "etc": 0o755}
ETC_FILES = ("hosts", "hostname", "resolv.conf")
_LOOK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def layer(layers_root: str) -> str:
    """The layer's directory under `layers_root` (the unpacked layers' root), made once: in a
    temporary directory beside it, renamed into place."""
    path = os.path.join(layers_root, NAME)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return path
    tmp = os.path.join(layers_root, "tmp", f"{NAME}.{os.getpid()}")
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    inroot.remove_tree(tmp)  # a leftover of a killed process with our PID
    try:
        os.mkdir(tmp)
        os.chmod(tmp, 0o755)
        for name, mode in DIRECTORIES.items():
            os.mkdir(os.path.join(tmp, name))
            os.chmod(os.path.join(tmp, name), mode)  # not the umask's
        for name in ETC_FILES:
            file = os.path.join(tmp, "etc", name)
            os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            os.chmod(file, 0o644)
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # another run made it first: theirs is the same
    finally:
        inroot.remove_tree(tmp)
    return path


def fits(image_layers: list[str], ours: str) -> bool:
    """Whether the layer `ours` can go on top of the image layers (their directories, any
    order) without changing what the container sees: see the module's docstring."""
    with inroot.opened(os.open(ours, _LOOK)) as fd:
        etc = _lstat(fd, "etc")
    if etc is None or not stat.S_ISDIR(etc.st_mode):
        return False  # not the layer `layer` makes
    etc_owner = (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid)
    for directory in image_layers:
        with inroot.opened(os.open(directory, _LOOK)) as fd:
            if not _layer_fits(fd, etc_owner):
                return False
    return True


def _layer_fits(fd: int, etc_owner: tuple[int, int, int]) -> bool:
    for name in DIRECTORIES:
        st = _lstat(fd, name)
        if st is None or _is_whiteout(st):
            continue
        if not stat.S_ISDIR(st.st_mode):
            return False
        if name == "etc":
            if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != etc_owner:
                return False
            with inroot.opened(os.open("etc", _LOOK, dir_fd=fd)) as etc_fd:
                for file in ETC_FILES:
                    entry = _lstat(etc_fd, file)
                    if entry is not None and not (
                        stat.S_ISREG(entry.st_mode) or _is_whiteout(entry)
                    ):
                        return False
    return True


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    with contextlib.suppress(FileNotFoundError):
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    return None


def _is_whiteout(st: os.stat_result) -> bool:
    """An overlay-format layer's deletion: a character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
