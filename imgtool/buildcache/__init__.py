"""The registry (or a directory) as a build cache that every runner shares.

`parse_spec` reads a `--cache-to`/`--cache-from` value, `open_source` opens a cache for a
build's lookups (a `CacheSource`, see imgtool.builder.cache), `export` writes the steps a
build made as a cache artifact (see artifact.py for its format).
"""

from imgtool.buildcache.exporter import ExportResult, export
from imgtool.buildcache.importer import ImportedCache, open_source
from imgtool.buildcache.spec import CacheSpec, parse_spec

__all__ = ["CacheSpec", "ExportResult", "ImportedCache", "export", "open_source", "parse_spec"]
