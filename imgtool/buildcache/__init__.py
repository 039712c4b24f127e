"""The registry (or a directory) as a build cache that every runner shares.

`parse_spec` reads a `--cache-to`/`--cache-from` value, `open_source` opens a cache for a
build's lookups (a `CacheSource`, see imgtool.builder.cache), `export` writes the steps a
build made as a cache artifact (see artifact.py for its format). The importer and exporter
load the registry client (requests, ssl): they are imported on first use, so that reading a
spec, or a build without cache flags, does not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgtool.buildcache.spec import CacheSpec, parse_spec

if TYPE_CHECKING:
    from imgtool.buildcache.exporter import ExportResult, export
    from imgtool.buildcache.importer import ImportedCache, open_source

__all__ = ["CacheSpec", "ExportResult", "ImportedCache", "export", "open_source", "parse_spec"]

_LAZY = {
    "ExportResult": "exporter",
    "export": "exporter",
    "ImportedCache": "importer",
    "open_source": "importer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
