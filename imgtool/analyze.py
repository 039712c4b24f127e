"""`layers`, `diff` and `check`: what makes an image big, what grew, and rules for CI.

Layers are read through their tar headers (an index per layer, cached in the store by
diff_id), never extracted. Values only: the CLI renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtool import filetree
from imgtool.errors import ConfigError, InvalidArgument
from imgtool.layer import index as layer_index
from imgtool.sources import Source

OVERLAY_STACK_LIMIT = 500  # lower layers one overlayfs mount stacks (FILESYSTEM_MAX_STACK_DEPTH)
DEFAULT_LAYER_WARNING = 100
CACHE_PRESET = (
    "**/.git",
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*_Packages*",
    "var/cache/apk/*",
    "root/.cache/pip",
    "root/.npm/_cacache",
    "**/__pycache__",
    "var/cache/yum",
    "var/cache/dnf",
)


@dataclass(frozen=True)
class LayerRow:
    index: int | None  # None for an empty-layer history entry
    digest: str
    diff_id: str
    compressed: int
    uncompressed: int | None
    files: int | None
    created_by: str
    comment: str = ""


@dataclass
class Report:
    name: str
    rows: list[LayerRow]
    remote: bool
    analysis: filetree.Analysis | None

    @property
    def layers(self) -> list[LayerRow]:
        return [r for r in self.rows if r.index is not None]

    @property
    def compressed(self) -> int:
        return sum(r.compressed for r in self.layers)

    @property
    def uncompressed(self) -> int | None:
        sizes = [r.uncompressed for r in self.layers]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    @property
    def size(self) -> int:
        """The image's size as checks count it: uncompressed, or compressed for a remote one."""
        return self.uncompressed if self.uncompressed is not None else self.compressed

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "remote": self.remote,
            "layers": [r.__dict__ for r in self.rows],
            "compressed_size": self.compressed,
            "uncompressed_size": self.uncompressed,
            "layer_count": len(self.layers),
        }
        a = self.analysis
        if a is not None:
            out["wasted"] = {
                "reclaimable_bytes": a.reclaimable,
                "efficiency": round(a.efficiency, 6),
                "dive_wasted_bytes": a.dive_wasted,
                "dive_efficiency": round(a.dive_efficiency, 6),
                "top": [w.__dict__ for w in a.waste[:top]],
            }
        return out


def _history(source: Source) -> list[tuple[bool, str, str]]:
    return [
        (bool(h.get("empty_layer")), str(h.get("created_by", "")), str(h.get("comment", "")))
        for h in source.config.history
    ]


def layer_trees(source: Source, cache_dir: Path | None) -> list[layer_index.LayerIndex]:
    from imgtool import compression  # zstandard: only when layers are read

    out = []
    for i, layer in enumerate(source.layers):
        cached = layer_index.load_cached(cache_dir, layer.diff_id)
        if cached is None:
            with source.open_layer(i) as blob:
                cached = layer_index.read_index(compression.open_decompressed(blob), layer.diff_id)
            layer_index.save_cached(cache_dir, cached)
        out.append(cached)
    return out


def report(source: Source, cache_dir: Path | None) -> Report:
    indexes = None if source.remote else layer_trees(source, cache_dir)
    rows: list[LayerRow] = []
    history = _history(source)
    layer_history = [h for h in history if not h[0]]
    if len(layer_history) != len(source.layers):
        history = [(False, "", "")] * len(source.layers)  # history that does not line up
    n = 0
    for empty, created_by, comment in history:
        if empty:
            rows.append(LayerRow(None, "", "", 0, 0, 0, created_by, comment))
            continue
        layer = source.layers[n]
        idx = indexes[n] if indexes else None
        rows.append(
            LayerRow(
                n,
                layer.digest,
                layer.diff_id,
                layer.size,
                idx.uncompressed_size if idx else None,
                sum(1 for m in idx.members if m.kind != "dir") if idx else None,
                created_by,
                comment,
            )
        )
        n += 1
    analysis = filetree.analyze([i.tree() for i in indexes]) if indexes else None
    return Report(source.name, rows, source.remote, analysis)


# --- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathChange:
    path: str
    change: str  # added | removed | grown | shrunk | changed | type
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass
class Diff:
    a: Report
    b: Report
    shared_layers: int
    paths: list[PathChange] = field(default_factory=list)

    @property
    def delta(self) -> int:
        return self.b.size - self.a.size


def diff(a: Report, b: Report) -> Diff:
    shared = 0
    for x, y in zip(a.layers, b.layers, strict=False):
        if x.diff_id != y.diff_id:
            break
        shared += 1
    changes: list[PathChange] = []
    if a.analysis and b.analysis:
        fa, fb = a.analysis.final, b.analysis.final
        for path in sorted(set(fa) | set(fb)):
            ea, eb = fa.get(path), fb.get(path)
            if ea is None and eb is not None:
                changes.append(PathChange(path, "added", 0, eb[1].size))
            elif eb is None and ea is not None:
                changes.append(PathChange(path, "removed", ea[1].size, 0))
            elif ea is not None and eb is not None:
                old, new = ea[1], eb[1]
                if old.kind != new.kind:
                    changes.append(PathChange(path, "type", old.size, new.size))
                elif old.size != new.size:
                    grew = "grown" if new.size > old.size else "shrunk"
                    changes.append(PathChange(path, grew, old.size, new.size))
                elif old.digest != new.digest or old.link != new.link:
                    changes.append(PathChange(path, "changed", old.size, new.size))
    changes.sort(key=lambda c: (-abs(c.delta), c.path))
    return Diff(a, b, shared, changes)


# --- check ------------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")


def parse_size(text: str | int) -> int:
    """A size limit of a rule: 300MB, 1.5GB (powers of 1000), 120MiB (powers of 1024), or
    plain bytes. These are dive's units (go-humanize's ParseBytes, its .dive-ci limits), so
    that a CI file's figures mean the same here; `run -m` and tmpfs sizes are Docker's, binary
    whatever the spelling (containerfile.values.byte_size)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        reason = f"invalid size {text!r} (use e.g. 300MB, 120MiB or 1.5GB)"
        raise InvalidArgument("size", text, reason)
    number, unit, binary = float(m.group(1)), m.group(2).lower(), m.group(3)
    power = " kmgt".index(unit) if unit else 0
    return int(number * (1024 if binary else 1000) ** power)


@dataclass
class Rules:
    max_size: int | None = None
    max_layer_size: int | None = None
    max_layers: int | None = None
    warn_layers: int = DEFAULT_LAYER_WARNING
    min_efficiency: float | None = None
    max_wasted: int | None = None
    max_growth: str | None = None  # "5%" or a size
    forbid: list[str] = field(default_factory=list)
    max_duplicate_bytes: int | None = None


@dataclass(frozen=True)
class RuleResult:
    rule: str
    status: str  # pass | fail | warn | skip
    message: str


def _fmt(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n}"


def check(r: Report, rules: Rules, baseline: Report | None = None) -> list[RuleResult]:
    for pattern in rules.forbid:  # a malformed glob would match nothing: the gate would pass
        try:
            filetree.check_glob(pattern)
        except ValueError as e:
            raise InvalidArgument("forbid", pattern, f"{pattern!r}: {e}") from None
    out: list[RuleResult] = []
    what = "compressed size (remote image)" if r.uncompressed is None else "size"
    if rules.max_size is not None:
        ok = r.size <= rules.max_size
        out.append(
            RuleResult(
                "max-size",
                "pass" if ok else "fail",
                f"{what} {_fmt(r.size)} (limit {_fmt(rules.max_size)})",
            )
        )
    if rules.max_layer_size is not None:
        biggest = max(r.layers, key=lambda x: x.uncompressed or x.compressed, default=None)
        size = (biggest.uncompressed or biggest.compressed) if biggest else 0
        ok = size <= rules.max_layer_size
        where = f"layer {biggest.index} ({biggest.created_by[:60]!r})" if biggest else "-"
        out.append(
            RuleResult(
                "max-layer-size",
                "pass" if ok else "fail",
                f"largest {where}: {_fmt(size)} (limit {_fmt(rules.max_layer_size)})",
            )
        )
    count = len(r.layers)
    if rules.max_layers is not None and count > rules.max_layers:
        out.append(RuleResult("max-layers", "fail", f"{count} layers (limit {rules.max_layers})"))
    elif count >= rules.warn_layers:
        out.append(
            RuleResult(
                "max-layers",
                "warn",
                f"{count} layers: overlayfs stacks at most {OVERLAY_STACK_LIMIT} "
                "and every layer costs a lookup; squash some",
            )
        )
    else:
        out.append(RuleResult("max-layers", "pass", f"{count} layers"))
    a = r.analysis
    for name, limit in (("min-efficiency", rules.min_efficiency), ("max-wasted", rules.max_wasted)):
        if limit is None:
            continue
        if a is None:
            out.append(RuleResult(name, "skip", "remote image: layers are not read"))
        elif name == "min-efficiency":
            ok = a.dive_efficiency >= limit
            out.append(
                RuleResult(
                    name,
                    "pass" if ok else "fail",
                    f"efficiency {a.dive_efficiency:.4f} as dive scores it "
                    f"(minimum {limit}); {_fmt(a.reclaimable)} reclaimable",
                )
            )
        else:
            ok = a.reclaimable <= limit
            top = ", ".join(f"/{w.path} ({_fmt(w.size)})" for w in a.waste[:3])
            out.append(
                RuleResult(
                    name,
                    "pass" if ok else "fail",
                    f"{_fmt(a.reclaimable)} in lower layers overwritten or "
                    f"deleted (limit {_fmt(limit)})" + (f": {top}" if top else ""),
                )
            )
    if rules.max_growth is not None:
        out.append(_growth(r, rules.max_growth, baseline))
    if rules.forbid:
        if a is None:
            out.append(RuleResult("forbid", "skip", "remote image: layers are not read"))
        else:
            hits = sorted(p for p in a.final for pat in rules.forbid if filetree.glob_match(pat, p))
            # a forbidden directory is one hit, not one per file below it
            tops = [p for p in hits if not any(p.startswith(h + "/") for h in hits if h != p)]
            out.append(
                RuleResult(
                    "forbid",
                    "fail" if tops else "pass",
                    (
                        "forbidden paths: "
                        + ", ".join("/" + p for p in tops[:10])
                        + (f" and {len(tops) - 10} more" if len(tops) > 10 else "")
                    )
                    if tops
                    else "no forbidden paths",
                )
            )
    if rules.max_duplicate_bytes is not None and a is not None:
        dups = a.duplicates()
        wasted = sum(size * (len(places) - 1) for _, size, places in dups)
        ok = wasted <= rules.max_duplicate_bytes
        first = (
            (f": /{dups[0][2][0][1]} in layers {', '.join(str(layer) for layer, _ in dups[0][2])}")
            if dups
            else ""
        )
        out.append(
            RuleResult(
                "max-duplicate-bytes",
                "pass" if ok else "fail",
                f"{len(dups)} files stored in more than one layer, "
                f"{_fmt(wasted)} extra (limit {_fmt(rules.max_duplicate_bytes)})" + first,
            )
        )
    return out


def _growth(r: Report, limit: str, baseline: Report | None) -> RuleResult:
    if baseline is None:
        return RuleResult("max-growth", "skip", "no --baseline image given")
    grown = r.size - baseline.size
    if limit.strip().endswith("%"):
        pct = float(limit.strip()[:-1])
        allowed = baseline.size * pct / 100
        shown = f"{pct:g}%"
    else:
        allowed, shown = parse_size(limit), limit
    ratio = grown / baseline.size * 100 if baseline.size else 0.0
    ok = grown <= allowed
    return RuleResult(
        "max-growth",
        "pass" if ok else "fail",
        f"{_fmt(grown)} ({ratio:+.1f}%) against {baseline.name} (limit {shown})",
    )


def load_rules(path: Path) -> tuple[Rules, str | None]:
    """Rules from the [check] table of a .imgtool.toml; returns (rules, baseline)."""
    import tomllib

    try:
        doc = tomllib.loads(path.read_text()).get("check", {})
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    known = {
        "max-size",
        "max-layer-size",
        "max-layers",
        "warn-layers",
        "min-efficiency",
        "max-wasted",
        "max-growth",
        "forbid",
        "forbid-caches",
        "max-duplicate-bytes",
        "baseline",
    }
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{path}: unknown [check] keys: {', '.join(sorted(unknown))}")
    rules = Rules()
    for key in ("max-size", "max-layer-size", "max-wasted", "max-duplicate-bytes"):
        if key in doc:
            setattr(rules, key.replace("-", "_"), parse_size(doc[key]))
    if "max-layers" in doc:
        rules.max_layers = int(doc["max-layers"])
    if "warn-layers" in doc:
        rules.warn_layers = int(doc["warn-layers"])
    if "min-efficiency" in doc:
        rules.min_efficiency = float(doc["min-efficiency"])
    if "max-growth" in doc:
        rules.max_growth = str(doc["max-growth"])
    rules.forbid = list(doc.get("forbid", []))
    if doc.get("forbid-caches"):
        rules.forbid += list(CACHE_PRESET)
    return rules, doc.get("baseline")


# --- reports ----------------------------------------------------------------------------------


def junit(name: str, results: list[RuleResult]) -> str:
    import xml.etree.ElementTree as ET

    failures = sum(1 for r in results if r.status == "fail")
    skipped = sum(1 for r in results if r.status == "skip")
    suite = ET.Element(
        "testsuite",
        name=f"imgtool check {name}",
        tests=str(len(results)),
        failures=str(failures),
        skipped=str(skipped),
        errors="0",
    )
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="imgtool.check", name=r.rule)
        if r.status == "fail":
            ET.SubElement(case, "failure", message=r.message).text = r.message
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.message)
        else:
            ET.SubElement(case, "system-out").text = r.message
    body = ET.tostring(suite, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>{body}</testsuites>\n'


def markdown(name: str, results: list[RuleResult], r: Report) -> str:
    icon = {"pass": "✅", "fail": "❌", "warn": "⚠️", "skip": "➖"}
    verdict = "fails" if any(x.status == "fail" for x in results) else "passes"
    lines = [
        f"### imgtool check: `{name}` {verdict}",
        "",
        f"{len(r.layers)} layers, {_fmt(r.size)}"
        + (f", {_fmt(r.analysis.reclaimable)} reclaimable" if r.analysis else ""),
        "",
        "| | rule | result |",
        "|---|---|---|",
    ]
    for x in results:
        lines.append(f"| {icon[x.status]} | `{x.rule}` | {x.message.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
