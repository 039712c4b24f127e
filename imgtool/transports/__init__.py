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
from imgtool.transports.read import ArchiveSource, RegistrySource, Source, StoreSource
from imgtool.transports.write import (
    ArchiveDestination,
    Destination,
    RegistryDestination,
    StoreDestination,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from imgtool.transports.pipe import Pipe


def __getattr__(name: str) -> object:
    """`Pipe` on first use: queue, which it stands on, is for a registry blob read as a file
    (an upload or archive from a registry), never for a copy into a layout or the store."""
    if name == "Pipe":
        from imgtool.transports.pipe import Pipe

        return Pipe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
