"""Where `copy`, `save` and `load` read images from and write them to.

Sources (the store or an OCI layout directory, a registry, an archive) give an image's
documents and its blobs as streams; destinations (the same kinds) take a chosen image,
`Selected`, and write it in their format. Every blob is verified on the way: by the store's
staging here, by the archive writers, by the registry itself on upload.

The store (and an `oci:` directory, which is one) is written as one transaction: blobs are
staged in `ingest/` and verified, and only when every blob of every image written has
verified are they renamed into `blobs/` and the names set; on any failure the staged files go
and the store is left exactly as it was.
"""

from imgtool.transports.common import Selected
from imgtool.transports.pipe import Pipe
from imgtool.transports.read import ArchiveSource, RegistrySource, Source, StoreSource
from imgtool.transports.write import (
    ArchiveDestination,
    Destination,
    RegistryDestination,
    StoreDestination,
)

__all__ = [
    "ArchiveDestination",
    "ArchiveSource",
    "Destination",
    "Pipe",
    "RegistryDestination",
    "RegistrySource",
    "Selected",
    "Source",
    "StoreDestination",
    "StoreSource",
]
