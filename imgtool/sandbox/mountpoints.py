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
# overlay's own xattrs, which the mount never shows (whiteout.OVERLAY_XATTR_PREFIXES, not
# imported: `whiteout` loads `typing`; a test keeps them equal)
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


def layer(layers_root: str) -> str:
    """The layer's directory under `layers_root` (the unpacked layers' root), made once: in a
    temporary directory beside it, renamed into place."""
    path = os.path.join(layers_root, NAME)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return path
    # a name of its own: imgtools in other PID namespaces may share the store
    tmp = os.path.join(layers_root, "tmp", f"{NAME}.{os.getpid()}.{os.urandom(6).hex()}")
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
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
        if not _made_by_layer(fd):
            return False  # half made, or not ours: the set-up makes the mount points
        etc = os.stat("etc", dir_fd=fd, follow_symlinks=False)
        etc_owner = (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid, _xattrs(fd, "etc"))
    for directory in image_layers:
        with inroot.opened(os.open(directory, _LOOK)) as fd:
            if not _layer_fits(fd, etc_owner):
                return False
    return True


def _made_by_layer(fd: int) -> bool:
    """Whether the directory `fd` holds exactly what `layer` makes, owned by us: a file
    planted there (an /etc/passwd) would show in every container."""
    owner = os.geteuid()
    expected = {name: sorted(ETC_FILES) if name == "etc" else [] for name in DIRECTORIES}
    if sorted(_names(fd, ".")) != sorted(DIRECTORIES):
        return False
    for name, mode in DIRECTORIES.items():
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode) or (stat.S_IMODE(st.st_mode), st.st_uid) != (mode, owner):
            return False
        if sorted(_names(fd, name)) != expected[name]:
            return False
    for name in ETC_FILES:
        st = os.stat(f"etc/{name}", dir_fd=fd, follow_symlinks=False)  # etc: no link, above
        if not (stat.S_ISREG(st.st_mode) and st.st_size == 0 and st.st_nlink == 1):
            return False
        if (stat.S_IMODE(st.st_mode), st.st_uid) != (0o644, owner):
            return False
    return True


def _names(dir_fd: int, name: str) -> list[str]:
    """The entries of the directory `name` under `dir_fd`, not following a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    with inroot.opened(os.open(name, flags, dir_fd=dir_fd)) as fd:
        return os.listdir(fd)


def _layer_fits(fd: int, etc_owner: tuple[int, int, int, dict[str, bytes]]) -> bool:
    for name in DIRECTORIES:
        st = _lstat(fd, name)
        if st is None or _is_whiteout(st):
            continue
        if not stat.S_ISDIR(st.st_mode):
            return False
        if name == "etc":
            # the merged /etc shows the top layer's mode, owner and xattrs (ACLs: a default
            # one decides the modes of the files made in /etc)
            if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, _xattrs(fd, name)) != etc_owner:
                return False
            with inroot.opened(os.open("etc", _LOOK, dir_fd=fd)) as etc_fd:
                for file in ETC_FILES:
                    entry = _lstat(etc_fd, file)
                    if entry is not None and not (
                        stat.S_ISREG(entry.st_mode) or _is_whiteout(entry)
                    ):
                        return False
    return True


def _xattrs(dir_fd: int, name: str) -> dict[str, bytes]:
    """The xattrs of the directory `name` (overlay's own are not shown through the mount)."""
    with inroot.opened(os.open(name, _LOOK, dir_fd=dir_fd)) as fd:
        where = inroot.fd_path(fd)
        return {
            key: os.getxattr(where, key)
            for key in os.listxattr(where)
            if not key.startswith(OVERLAY_XATTR_PREFIXES)
        }


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    with contextlib.suppress(FileNotFoundError):
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    return None


def _is_whiteout(st: os.stat_result) -> bool:
    """An overlay-format layer's deletion: a character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
