"""What `images` and `inspect` show: values computed from the store, no printing."""

from __future__ import annotations

import datetime as dt

from imgtool import oci
from imgtool.errors import ImgtoolError
from imgtool.store import INDEX_DIGEST_ANNOTATION, Store
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any


class ImageRow(Frozen):
    __slots__ = ("name", "digest", "media_type", "image_id", "created", "size", "platforms")
    name: str
    digest: str
    media_type: str
    image_id: str  # the config digest, Docker's image id
    created: str | None
    size: int
    platforms: tuple[str, ...]

    def __init__(
        self,
        name: str,
        digest: str,
        media_type: str,
        image_id: str,
        created: str | None,
        size: int,
        platforms: tuple[str, ...],
    ) -> None:
        self._init(name, digest, media_type, image_id, created, size, platforms)

    @property
    def created_ago(self) -> str:
        return _ago(self.created)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "mediaType": self.media_type,
            "id": self.image_id,
            "created": self.created,
            "size": self.size,
            "platforms": list(self.platforms),
        }


def _ago(created: str | None) -> str:
    if not created:
        return "-"
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    secs = (dt.datetime.now(dt.UTC) - when).total_seconds()
    for unit, n in (
        ("years", 31536000),
        ("months", 2592000),
        ("weeks", 604800),
        ("days", 86400),
        ("hours", 3600),
        ("minutes", 60),
    ):
        if secs >= 2 * n:
            return f"{int(secs // n)} {unit} ago"
    return "just now" if secs < 120 else "a few minutes ago"


def list_images(store: Store) -> list[ImageRow]:
    rows = []
    for d in store.entries():
        try:
            top = store.manifest(d)
            manifests = store.platform_manifests(top)
            configs = [store.config(m) for m in manifests]
        except ImgtoolError:
            continue  # not an image (an artifact, a broken entry): `inspect` says why
        size = len(top.raw) + sum(
            len(m.raw) + sum(b.size for b in m.blobs()) for m in manifests if m is not top
        )
        if isinstance(top, oci.Manifest):
            size += sum(b.size for b in top.blobs())
        rows.append(
            ImageRow(
                d.ref_name or "<none>",
                d.digest,
                d.media_type,
                # the descriptor's digest: verified when stored, no need to hash it again
                manifests[0].config.digest if len(configs) == 1 else "",
                max((c.created or "" for c in configs), default=None) or None,
                size,
                tuple(str(c.platform) for c in configs),
            )
        )
    return rows


def inspect_image(store: Store, name: str, platform: oci.Platform | None = None) -> dict[str, Any]:
    img = store.image(name, platform)
    out: dict[str, Any] = {
        "Name": img.name,
        "Digest": img.descriptor.digest,
        "MediaType": img.descriptor.media_type,
    }
    index_digest = img.descriptor.annotations.get(INDEX_DIGEST_ANNOTATION)
    if img.index is not None:
        out["Index"] = oci.load_json(img.index.raw, "index")
        out["ManifestDigest"] = img.manifest.digest
    elif index_digest:
        out["IndexDigest"] = index_digest
    out["Id"] = img.manifest.config.digest  # verified when stored: not hashed again
    out["Platform"] = str(img.config.platform)
    out["Size"] = img.size
    out["Manifest"] = oci.load_json(img.manifest.raw, "manifest")
    out["Config"] = dict(img.config.doc)
    return out
