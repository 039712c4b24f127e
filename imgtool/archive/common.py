"""What both archive formats share: limits, names of members, the manifest as Go writes it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import BinaryIO

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool import reference as refs
from imgtool.digest import Digest
from imgtool.errors import InvalidReference, SpecError

MAX_DOCUMENT = 4 << 20  # containers/image's limit for what is read into memory whole
LAYOUT_HEADER = b'{"imageLayoutVersion":"1.0.0"}'
CONTAINERD_NAME = "io.containerd.image.name"
BLOB_MEMBER = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")
LAYER_TYPES = {"none": mt.OCI_LAYER, "gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD}

BlobOpener = Callable[[oci.Descriptor], BinaryIO]


def blob_member(digest: str) -> str:
    return "blobs/sha256/" + Digest.parse_sha256(digest).encoded


def member_digest(name: str) -> str | None:
    """The digest a content-addressed member name claims, if it is one."""
    m = BLOB_MEMBER.fullmatch(name)
    return f"sha256:{m.group(1)}" if m else None


def normalize_name(text: str, what: str) -> str:
    try:
        return str(refs.parse(text))
    except InvalidReference as e:
        raise SpecError(f"{what}: {e}") from None


def manifest_bytes(config: oci.Descriptor, layers: Sequence[oci.Descriptor]) -> bytes:
    """An OCI manifest as Go's encoder writes one (Docker, containerd): fields in the spec's
    order, no spaces."""
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.to_dict(),
        "layers": [d.to_dict() for d in layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode()
