"""The build cache: keys, records, and why a step missed."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from imgtool.builder.common import Layer, _StageContext
from imgtool.containerfile.parser import Instruction

CACHE_VERSION = "imgtool-build-cache-1"


def _key(*parts: object) -> str:
    raw = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class CacheSteps:
    """Cache lookups for the Builder (a mixin: it uses the builder's store and options)."""

    def _cache_get(self, key: str) -> Layer | None:
        if self.opts.no_cache:
            return None
        try:
            doc = json.loads((self.cache_dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        layer = Layer(**doc)
        if not self.store.has_blob(layer.digest):
            return None  # gc took the blob: build again
        return layer

    def _cache_put(self, key: str, layer: Layer) -> None:
        from imgtool.atomic import atomic_write

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.cache_dir / f"{key}.json", json.dumps(layer.__dict__).encode(), durable=False
        )

    def _explain(
        self, ctx: _StageContext, inst: Instruction, inputs: dict[str, Any], key: str
    ) -> None:
        """Remember this step's inputs; with --explain-cache, say which one changed."""
        d = (
            self.cache_dir
            / "explain"
            / _key(str(self.opts.context.resolve()), self.file_label)[:16]
        )
        d.mkdir(parents=True, exist_ok=True)
        record = d / f"{_key(ctx.stage.name)[:16]}.{inst.line}.json"  # never a path
        hit = (self.cache_dir / f"{key}.json").exists() and not self.opts.no_cache
        if not hit and self.opts.explain_cache:
            reason = "no earlier build of this step"
            with contextlib.suppress(OSError, ValueError):
                old = json.loads(record.read_text())
                reason = _why(old, inputs)
            self.say(f"  cache miss at line {inst.line}: {reason}")
        record.write_text(json.dumps(inputs, default=str))


def _why(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("instruction") != new.get("instruction"):
        return "the instruction changed"
    for k, v in (new.get("args") or {}).items():
        if (old.get("args") or {}).get(k) != v:
            return f"build arg {k} changed ({(old.get('args') or {}).get(k)!r} -> {v!r})"
    of, nf = old.get("files") or {}, new.get("files") or {}
    changed = sorted(p for p in set(of) | set(nf) if of.get(p) != nf.get(p))
    if changed:
        return "files changed: " + ", ".join(changed[:10])
    if old.get("parent") != new.get("parent"):
        return "an earlier step (or the base image) changed"
    return "the cache entry is gone (gc, or --no-cache)"
