"""The seam for remote build caches: `BuildOptions.cache_from` is read after the local cache
misses (a hit is then recorded locally), `BuildResult.cache_entries` lists every layer-making
step of every stage built, and --explain-cache names the cache a hit came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgtool.builder import (
    BuildOptions,
    BuildResult,
    CacheEntry,
    CacheSource,
    Layer,
    build,
    cache_mount_dir,
)
from imgtool.store import Store

TWO_STAGES = """\
FROM scratch AS base
COPY a.txt /a.txt
FROM scratch
COPY --from=base /a.txt /copied.txt
COPY b.txt /b.txt
"""


@dataclass
class OtherStore:
    """A cache source backed by another store's build: a hit copies the blob over."""

    entries: dict[str, Layer]
    source: Store
    into: Store
    name: str = "other store"
    asked: list[str] = field(default_factory=list)

    def lookup(self, key: str) -> Layer | None:
        self.asked.append(key)
        layer = self.entries.get(key)
        if layer is not None:
            self.into.write_blob(self.source.read_blob(layer.digest))
        return layer


def _build(tmp: Path, store: Store, **kw: object) -> tuple[BuildResult, list[str]]:
    ctx = tmp / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(TWO_STAGES)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    said: list[str] = []
    opts = BuildOptions(context=ctx, tags=["t:1"], output=said.append, **kw)  # type: ignore[arg-type]
    return build(store, opts), said


def test_cache_entries_list_every_layer_step_of_every_stage(tmp_path: Path) -> None:
    result, _ = _build(tmp_path, Store(tmp_path / "s"))
    assert [(e.stage, e.final) for e in result.cache_entries] == [
        ("base", False),
        ("1", True),
        ("1", True),
    ]
    assert all(isinstance(e, CacheEntry) and len(e.key) == 64 for e in result.cache_entries)
    again, _ = _build(tmp_path, Store(tmp_path / "s"))
    assert again.cached == 3 and again.cache_entries == result.cache_entries  # hits listed


def test_a_source_is_read_after_the_local_cache_misses(tmp_path: Path) -> None:
    first_store = Store(tmp_path / "first")
    first, _ = _build(tmp_path, first_store)
    second_store = Store(tmp_path / "second")
    source = OtherStore({e.key: e.layer for e in first.cache_entries}, first_store, second_store)
    assert isinstance(source, CacheSource)  # the Protocol, structurally
    result, said = _build(tmp_path, second_store, cache_from=(source,), explain_cache=True)
    assert result.cached == 3 and result.image_id == first.image_id
    assert sum("cache hit at line" in x and x.endswith(": other store") for x in said) == 3
    source.asked.clear()
    again, said = _build(tmp_path, second_store, cache_from=(source,), explain_cache=True)
    assert again.cached == 3 and source.asked == []  # recorded in the local cache
    assert sum(x.endswith(": local") for x in said) == 3


def test_a_miss_says_which_caches_were_searched(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    empty = OtherStore({}, store, store)
    result, said = _build(tmp_path, store, cache_from=(empty,), explain_cache=True)
    assert result.cached == 0 and len(empty.asked) == 3
    assert sum(x.endswith("(not in: local, other store)") for x in said) == 3


def test_no_cache_reads_no_source(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    empty = OtherStore({}, store, store)
    result, _ = _build(tmp_path, store, cache_from=(empty,), no_cache=True)
    assert result.cached == 0 and empty.asked == []


def test_cache_mount_dirs_are_named_by_a_hash_of_the_id(tmp_path: Path) -> None:
    a = cache_mount_dir(tmp_path, "../../etc")
    assert a.parent == tmp_path / "mounts" and len(a.name) == 16
    assert a == cache_mount_dir(tmp_path, "../../etc") != cache_mount_dir(tmp_path, "go")
