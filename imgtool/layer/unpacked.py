"""Unpacked layers: each layer once, in overlay format, in its own directory keyed by diff_id.

    <store>/layers/sha256/<diff_id hex>/diff     the layer's files (overlay lower dir)
    <store>/layers/l/<short id> -> ../sha256/<hex>/diff
                                                 short names, so that an overlay mount's option
                                                 string (one page) can name hundreds of layers

A layer is unpacked into a temporary directory while both the compressed digest and the
uncompressed diff_id are checked, and renamed into place only when both match; a refused layer
leaves nothing behind. Every image and container that uses a layer shares its directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from imgtool import mediatypes as mt
from imgtool.errors import ImgtoolError, LayerError
from imgtool.store import Store, StoredImage
from imgtool.verify import VerifyingReader

SHORT_ID_LEN = 12


def _rmtree(path: Path, ignore_errors: bool = False) -> None:
    import shutil  # only on failure and removal: it imports bz2 and lzma, ~2.5 ms of every run

    shutil.rmtree(path, ignore_errors=ignore_errors)


class LayerStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "layers"

    def path(self, diff_id: str) -> Path:
        return self.root / "sha256" / diff_id.split(":", 1)[1]

    def diff_dir(self, diff_id: str) -> Path:
        return self.path(diff_id) / "diff"

    def short_name(self, diff_id: str) -> str:
        return diff_id.split(":", 1)[1][:SHORT_ID_LEN]

    def has(self, diff_id: str) -> bool:
        return self.diff_dir(diff_id).is_dir()

    @contextlib.contextmanager
    def _lock(self, diff_id: str) -> Iterator[None]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{self.short_name(diff_id)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def unpack(self, image: StoredImage) -> list[str]:
        """Unpack every layer of the image that is not unpacked yet; returns the diff_ids,
        lowest layer first."""
        manifest, config = image.manifest, image.config
        diff_ids = config.diff_ids
        if len(diff_ids) != len(manifest.layers):
            raise LayerError(
                f"{image.name}: the config names {len(diff_ids)} layers, the manifest "
                f"{len(manifest.layers)}"
            )
        self.unpack_layers(
            [
                (d.digest, d.size, d.media_type, diff_id)
                for d, diff_id in zip(manifest.layers, diff_ids, strict=True)
            ]
        )
        return diff_ids

    def unpack_layers(self, layers: list[tuple[str, int, str, str]]) -> None:
        """Unpack (blob digest, size, media type, diff_id) layers not unpacked yet."""
        for digest, size, media_type, diff_id in layers:
            if self.has(diff_id):
                continue
            with self._lock(diff_id):
                if not self.has(diff_id):
                    self._unpack_one(digest, size, media_type, diff_id)

    def _apply_blob(
        self, digest: str, size: int, media_type: str, diff_id: str, dest: Path, fmt: str
    ) -> None:
        """Apply one layer blob to `dest`, checking its digest and its diff_id."""
        from imgtool import compression  # zstandard: only when a layer is unpacked
        from imgtool.layer.apply import apply_layer

        kind = mt.layer_compression(media_type)
        with self.store.open_blob(digest) as blob:
            packed = VerifyingReader(blob, digest, size, f"layer {digest}")
            codec = None if kind == "unknown" else kind
            plain = VerifyingReader(
                compression.open_decompressed(packed, codec),  # type: ignore[arg-type]
                diff_id,
                None,
                f"layer {digest} (uncompressed, diff_id)",
            )
            apply_layer(plain, dest, fmt)  # type: ignore[arg-type]
            plain.drain()  # tar writers leave padding after the end-of-archive blocks
            packed.drain()

    def export_rootfs(self, image: StoredImage, dest: Path) -> None:
        """Apply every layer, in order, to one directory (what `umoci unpack` makes)."""
        dest.mkdir(parents=True, exist_ok=True)
        for desc, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
            self._apply_blob(desc.digest, desc.size, desc.media_type, diff_id, dest, "plain")

    def _unpack_one(self, digest: str, size: int, media_type: str, diff_id: str) -> None:
        tmp = self.root / "tmp" / f"{self.short_name(diff_id)}.{os.getpid()}"
        if tmp.exists():
            _rmtree(tmp)
        (tmp / "diff").mkdir(parents=True)
        try:
            self._apply_blob(digest, size, media_type, diff_id, tmp / "diff", "overlay")
            final = self.path(diff_id)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
        except (ImgtoolError, OSError, EOFError) as e:
            _rmtree(tmp, ignore_errors=True)
            if isinstance(e, ImgtoolError):
                raise
            raise LayerError(f"cannot unpack layer {digest}: {e}") from None
        links = self.root / "l"
        links.mkdir(exist_ok=True)
        link = links / self.short_name(diff_id)
        with contextlib.suppress(FileExistsError):
            os.symlink(f"../sha256/{diff_id.split(':', 1)[1]}/diff", link)

    def remove_unused(self, keep: set[str]) -> list[str]:
        """Remove unpacked layers whose diff_id is not in `keep`; returns what went."""
        removed = []
        base = self.root / "sha256"
        if not base.is_dir():
            return removed
        for d in base.iterdir():
            diff_id = f"sha256:{d.name}"
            if diff_id in keep:
                continue
            with self._lock(diff_id):
                with contextlib.suppress(FileNotFoundError):
                    (self.root / "l" / self.short_name(diff_id)).unlink()
                _rmtree(d, ignore_errors=True)
            removed.append(diff_id)
        return removed
