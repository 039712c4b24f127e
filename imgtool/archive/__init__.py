"""Image archives, read and written: `docker save`'s format and OCI layouts in a tar.

docker-archive: `manifest.json` lists the images (`Config`, `RepoTags`, `Layers`, paths of
members); layers are tars, uncompressed as `docker save` writes them. Docker 25 and later also
put an OCI layout beside it (`oci-layout`, `index.json`, `blobs/sha256/`), naming the same
members. Reading takes an image's manifest from that layout when one there has the image's
config and layers (its digest is kept), else makes an OCI manifest for the members as they
are: an uncompressed layer's digest is then its diff_id, so the manifest digest differs from
the registry's (the image id, the config's digest, and the diff_ids stay). Writing does what
Docker 25 does: uncompressed layers under `blobs/sha256/<diff_id>`, the config, an OCI manifest,
`index.json`, `manifest.json`, `oci-layout` and `repositories`.

oci-archive: a tar of an OCI image layout; images are the entries of `index.json`, named by
`org.opencontainers.image.ref.name` (and containerd's `io.containerd.image.name`).

Every blob is verified (sha256 of what is read) by whoever consumes it; documents read whole
(manifest.json, index.json, manifests, configs) are refused over 4 MiB, from their header.
"""

from imgtool.archive.common import CONTAINERD_NAME, MAX_DOCUMENT, blob_member, manifest_bytes
from imgtool.archive.reader import ArchiveImage, ImageArchive, open_archive
from imgtool.archive.writer import DockerArchiveWriter, OciArchiveWriter

__all__ = [
    "CONTAINERD_NAME",
    "MAX_DOCUMENT",
    "ArchiveImage",
    "DockerArchiveWriter",
    "ImageArchive",
    "OciArchiveWriter",
    "blob_member",
    "manifest_bytes",
    "open_archive",
]
