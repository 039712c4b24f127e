"""File trees of layers, from tar headers alone (pure): stacking, sizes and wasted bytes.

Two figures of waste, said apart:
- `reclaimable`: bytes that lower layers carry but the image does not show, because a later
  layer overwrote or deleted them (whiteouts and opaque directories): what squashing the
  layers would save. Each item says which layer added the file and which removed it.
- `dive_wasted` and `dive_efficiency`: dive's figures, for comparability. dive counts every copy
  of a path that exists in more than one layer, the copy that stays included
  (wagoodman/dive#684), and ignores opaque-directory markers.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

from imgtool import whiteout
from imgtool.containerfile.pathmatch import check_syntax, match_component


@dataclass(frozen=True)
class Entry:
    path: str  # relative, no leading slash, '' never
    kind: str  # file, dir, symlink, hardlink, char, block, fifo
    size: int = 0  # bytes of content (regular files only)
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    digest: str = ""  # sha256 of a regular file's content, when known


@dataclass
class LayerTree:
    """What one layer says: entries, whiteouts and opaque directories, in tar order."""

    entries: list[Entry] = field(default_factory=list)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)

    @classmethod
    def from_members(cls, members: Iterable[Entry]) -> LayerTree:
        tree = cls()
        for e in members:
            kind, target = whiteout.classify(e.path)
            if kind == "whiteout":
                tree.whiteouts.append(target)
            elif kind == "opaque":
                tree.opaque.append(target)
            else:
                tree.entries.append(e)
        return tree

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def file_count(self) -> int:
        return sum(1 for e in self.entries if e.kind != "dir")


@dataclass(frozen=True)
class Waste:
    path: str
    size: int
    added_in: int  # layer index
    removed_in: int
    how: str  # overwritten | deleted | hidden (by an opaque directory)


class _Stack:
    """The stacked tree: path -> (layer index, entry), with children per directory."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[int, Entry]] = {}
        self.children: dict[str, set[str]] = {}

    def subtree(self, path: str) -> list[str]:
        out, todo = [], list(self.children.get(path, ()))
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(self.children.get(p, ()))
        return out

    def remove(self, path: str) -> list[tuple[str, int, Entry]]:
        gone = []
        for p in [*self.subtree(path), path]:
            if p in self.nodes:
                layer, e = self.nodes.pop(p)
                gone.append((p, layer, e))
            self.children.pop(p, None)
        parent = posixpath.dirname(path)
        self.children.get(parent, set()).discard(path)
        return gone

    def put(self, layer: int, e: Entry) -> None:
        self.nodes[e.path] = (layer, e)
        child, parent = e.path, posixpath.dirname(e.path)
        while True:
            kids = self.children.setdefault(parent, set())
            if child in kids:
                break
            kids.add(child)
            if parent == "":
                break
            child, parent = parent, posixpath.dirname(parent)


@dataclass
class Analysis:
    layers: list[LayerTree]
    final: dict[str, tuple[int, Entry]]
    waste: list[Waste]
    dive_wasted: int
    dive_efficiency: float
    dive_paths: list[tuple[str, int, int]]  # (path, cumulative bytes, copies)

    @property
    def total_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def final_bytes(self) -> int:
        return sum(e.size for _, e in self.final.values())

    @property
    def reclaimable(self) -> int:
        return sum(w.size for w in self.waste)

    @property
    def efficiency(self) -> float:
        """The share of the layers' bytes that the image shows (1.0: nothing is wasted)."""
        total = self.total_bytes
        return 1.0 if total == 0 else (total - self.reclaimable) / total

    def duplicates(self) -> list[tuple[str, int, list[tuple[int, str]]]]:
        """Files whose content (by digest) is stored in more than one layer:
        (digest, size, [(layer, path), ...])."""
        seen: dict[str, list[tuple[int, str, int]]] = {}
        for i, layer in enumerate(self.layers):
            for e in layer.entries:
                if e.kind == "file" and e.digest and e.size:
                    seen.setdefault(e.digest, []).append((i, e.path, e.size))
        out = []
        for digest, places in seen.items():
            if len({layer for layer, _, _ in places}) > 1:
                out.append((digest, places[0][2], [(layer, p) for layer, p, _ in places]))
        return sorted(out, key=lambda d: -d[1] * (len(d[2]) - 1))


def analyze(layers: list[LayerTree]) -> Analysis:
    stack = _Stack()
    waste: list[Waste] = []

    def lost(items: list[tuple[str, int, Entry]], by: int, how: str) -> None:
        for path, added, e in items:
            if e.size:
                waste.append(Waste(path, e.size, added, by, how))

    for i, layer in enumerate(layers):
        for d in layer.opaque:  # opaque markers apply to lower layers only
            lost([(p, *stack.nodes[p]) for p in stack.subtree(d) if p in stack.nodes], i, "hidden")
            for p in list(stack.children.get(d, ())):
                stack.remove(p)
        for t in layer.whiteouts:
            lost(stack.remove(t), i, "deleted")
        for e in layer.entries:
            old = stack.nodes.get(e.path)
            if old is not None:
                if old[1].kind == "dir" and e.kind == "dir":
                    stack.put(i, e)
                    continue
                lost(stack.remove(e.path), i, "overwritten")
            stack.put(i, e)
    dive_wasted, dive_eff, dive_paths = _dive(layers)
    return Analysis(
        layers,
        stack.nodes,
        sorted(waste, key=lambda w: (-w.size, w.path)),
        dive_wasted,
        dive_eff,
        dive_paths,
    )


def _dive(layers: list[LayerTree]) -> tuple[int, float, list[tuple[str, int, int]]]:
    """dive's figures: per path, the sizes of every leaf occurrence across layers (a whiteout
    of a directory counts what it deletes below, in the layers under it)."""
    cumulative: dict[str, int] = {}
    minimum: dict[str, int] = {}
    copies: dict[str, int] = {}
    stack = _Stack()
    for i, layer in enumerate(layers):
        parents = {posixpath.dirname(e.path) for e in layer.entries}
        parents |= {posixpath.dirname(t) for t in layer.whiteouts}
        occurrences: list[tuple[str, int]] = []
        for t in layer.whiteouts:
            size = 0
            node = stack.nodes.get(t)
            if node is not None and node[1].kind == "dir":
                size = sum(stack.nodes[p][1].size for p in stack.subtree(t) if p in stack.nodes)
            occurrences.append((t, size))
        for e in layer.entries:
            if e.kind == "dir" and e.path in parents:
                continue  # not a leaf in this layer
            occurrences.append((e.path, e.size))
        for path, size in occurrences:
            cumulative[path] = cumulative.get(path, 0) + size
            minimum[path] = min(minimum.get(path, size), size)
            copies[path] = copies.get(path, 0) + 1
        for t in layer.whiteouts:
            stack.remove(t)
        for e in layer.entries:
            stack.put(i, e)
    total = sum(cumulative.values())
    score = 1.0 if total == 0 else sum(minimum.values()) / total
    repeated = [(p, cumulative[p], copies[p]) for p in cumulative if copies[p] > 1]
    wasted = sum(c for _, c, _ in repeated)
    return wasted, score, sorted(repeated, key=lambda r: (-r[1], r[0]))


def check_glob(pattern: str) -> None:
    """Refuse a pattern glob_match would silently never match (an unclosed class, a trailing
    escape: Go's path.Match syntax errors). Raises ValueError naming the part."""
    for part in pattern.strip("/").split("/"):
        if part != "**":
            check_syntax(part)


def glob_match(pattern: str, path: str) -> bool:
    """`**` matches any number of path components (also none); other parts match one
    component as COPY's wildcards do (containerfile.pathmatch: Go's path.Match).
    Matched component by component over the path once (no recursion, no backtracking: paths
    from images can be thousands of components deep)."""
    parts, names = pattern.strip("/").split("/"), path.strip("/").split("/")
    # reach[i]: the pattern's first i parts match the path's components seen so far
    reach = _close_stars(parts, [True] + [False] * len(parts))
    for name in names:
        nxt = [False] * (len(parts) + 1)
        for i, part in enumerate(parts):
            if reach[i] and (part == "**" or match_component(part, name)):
                nxt[i + 1] = True
            if reach[i + 1] and part == "**":
                nxt[i + 1] = True  # `**` takes one more component
        reach = _close_stars(parts, nxt)
        if not any(reach):
            return False
    return reach[len(parts)]


def _close_stars(parts: list[str], reach: list[bool]) -> list[bool]:
    """A `**` may match no component at all."""
    for i, part in enumerate(parts):
        if reach[i] and part == "**":
            reach[i + 1] = True
    return reach
