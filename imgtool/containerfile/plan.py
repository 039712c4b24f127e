"""The stage plan: which stages there are, what each reads, which the target needs, and which
can be built at the same time.

A stage reads another through its FROM (a name of an earlier stage, after the global ARGs are
expanded), `COPY --from=` and `RUN --mount=…,from=` (an earlier stage's name or index). A
stage that names itself or a later stage is a cycle, never an image of that name; any other
name is an image. Everything here is checked before a step runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from imgtool.containerfile import shell
from imgtool.containerfile.instructions import Arg, Copy, From, Onbuild, Run, Typed, typed
from imgtool.containerfile.parser import Instruction
from imgtool.errors import BuildError, ContainerfileError

# BuildKit's rule for `FROM … AS name`; a name also names files of the build cache
STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
PLATFORM = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")


@dataclass(frozen=True)
class StagePlan:
    index: int
    name: str  # its AS name (lower case), or its index as a string
    base: str  # the FROM image, the global ARGs expanded
    base_stage: int | None  # the earlier stage FROM names, if it names one
    instructions: tuple[Typed, ...]
    reads: tuple[int, ...]  # the stages it needs built first (its base's included)
    line: int
    platform: str | None = None  # FROM --platform, expanded: os/arch[/variant]


@dataclass(frozen=True)
class Plan:
    meta: tuple[tuple[str, str], ...]  # the global ARGs (and platform ARGs) FROM lines see
    stages: tuple[StagePlan, ...]
    target: int
    needed: tuple[int, ...]  # the stages the target needs, itself included, in order

    def stage_named(self, name: str, before: int) -> StagePlan | None:
        """The stage `name` means for a stage at index `before`: an earlier stage's name or
        index; None for an image."""
        return _earlier(self.stages[:before], name)

    def waves(self) -> list[tuple[int, ...]]:
        """The needed stages in groups: each reads only stages of earlier groups, so the
        stages of a group are independent of each other."""
        level: dict[int, int] = {}
        for i in self.needed:  # in order: what a stage reads comes before it
            level[i] = 1 + max((level[r] for r in self.stages[i].reads), default=-1)
        count = 1 + max(level.values(), default=-1)
        return [tuple(i for i in self.needed if level[i] == n) for n in range(count)]


def _earlier(stages: tuple[StagePlan, ...], name: str) -> StagePlan | None:
    lowered = name.lower()
    for st in stages:
        if st.name == lowered:
            return st
    if name.isdigit() and int(name) < len(stages):
        return stages[int(name)]
    return None


def make_plan(
    instructions: list[Instruction],
    file: str,
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    platform_args: Mapping[str, str] | None = None,
) -> Plan:
    """Type every instruction, split the stages, resolve what each reads, refuse unknown
    targets, duplicate names and cycles."""
    meta = dict(platform_args or {})
    groups: list[tuple[From, list[Typed]]] = []
    for inst in instructions:
        t = typed(inst, file)
        if isinstance(t, From):
            groups.append((t, []))
        elif groups:
            groups[-1][1].append(t)
        elif isinstance(t, Arg):
            _global_args(t, meta, build_args or {}, file)
        else:
            raise ContainerfileError(
                f"{inst.keyword.upper()} before the first FROM", file=file, line=inst.line
            )
    if not groups:
        raise ContainerfileError("no FROM instruction", file=file, line=1)
    names = tuple(frm.name or str(i) for i, (frm, _) in enumerate(groups))
    stages: list[StagePlan] = []
    for frm, body in groups:
        stages.append(_stage(len(stages), frm, body, tuple(stages), names, meta, file))
    chosen = _target(tuple(stages), target)
    return Plan(tuple(meta.items()), tuple(stages), chosen, _needed(tuple(stages), chosen))


def _global_args(arg: Arg, meta: dict[str, str], build_args: Mapping[str, str], file: str) -> None:
    for name, default in arg.names:
        if name in build_args:
            meta[name] = build_args[name]
        elif default is not None:
            meta[name] = _expand(default, meta, arg.source, file)
        # else declared but unset: FROM ${NAME:-default} sees it unset


def _expand(word: str, env: Mapping[str, str], inst: Instruction, file: str) -> str:
    try:
        return shell.process_word(word, env)
    except shell.ShellError as e:
        raise ContainerfileError(str(e), file=file, line=inst.line) from None


def _stage(
    index: int,
    frm: From,
    body: list[Typed],
    earlier: tuple[StagePlan, ...],
    names: tuple[str, ...],
    meta: Mapping[str, str],
    file: str,
) -> StagePlan:
    line = frm.source.line
    if frm.name is not None and not STAGE_NAME.fullmatch(frm.name):
        raise ContainerfileError(
            f"invalid stage name {frm.source.args[2]!r}: a letter, then letters, digits,"
            " '-', '_' or '.'",
            file=file,
            line=line,
        )
    if frm.name is not None and any(st.name == frm.name for st in earlier):
        raise ContainerfileError(f"duplicate stage name {frm.name!r}", file=file, line=line)
    name = frm.name or str(index)
    base = _expand(frm.image, meta, frm.source, file)
    base_stage = _earlier(earlier, base)
    reads = [] if base_stage is None else [base_stage.index]
    for t in body:
        for ref in _references(t):
            reads += _reference(ref, t, index, earlier, names, file)
    idx = base_stage.index if base_stage is not None else None
    platform = _platform(frm, base_stage is not None, meta, file)
    reads_ = tuple(sorted(set(reads)))
    return StagePlan(index, name, base, idx, tuple(body), reads_, line, platform)


def _platform(frm: From, from_stage: bool, meta: Mapping[str, str], file: str) -> str | None:
    """FROM --platform expanded with the global ARGs (BUILDPLATFORM among them) and checked;
    a stage named as the base has its own platform: a flag there would say nothing."""
    if frm.platform is None:
        return None
    platform = _expand(frm.platform, meta, frm.source, file)
    if from_stage:
        why = f"{frm.image!r} is a stage, built for its own platform"
    elif not PLATFORM.fullmatch(platform):
        why = "expected os/arch or os/arch/variant"
    else:
        return platform
    raise ContainerfileError(f"FROM --platform={platform}: {why}", file=file, line=frm.source.line)


def _references(t: Typed) -> list[str]:
    """The names an instruction reads a stage (or an image) by."""
    if isinstance(t, Onbuild):
        return []  # run in a later build, where its names mean that build's stages
    if isinstance(t, Copy) and t.from_ is not None:
        return [t.from_]
    if isinstance(t, Run):
        return [m.get("from") for m in t.mounts if m.get("from")]
    return []


def _reference(
    ref: str,
    t: Typed,
    index: int,
    earlier: tuple[StagePlan, ...],
    names: tuple[str, ...],
    file: str,
) -> list[int]:
    """The stage `ref` names for stage `index` ([] for an image); itself or a later stage
    (by name or index) is a cycle."""
    found = _earlier(earlier, ref)
    if found is not None:
        return [found.index]
    later = [
        j
        for j in range(index, len(names))
        if names[j] == ref.lower() or (ref.isdigit() and int(ref) == j)
    ]
    if not later:
        return []
    what = "itself" if later[0] == index else f"the later stage {names[later[0]]!r}"
    raise ContainerfileError(
        f"circular dependency: stage {names[index]!r} reads {ref!r} ({what})",
        file=file,
        line=t.source.line,
    )


def _target(stages: tuple[StagePlan, ...], target: str | None) -> int:
    if not target:
        return len(stages) - 1
    for st in stages:
        if st.name == target.lower():
            return st.index
    raise BuildError(
        f"target stage {target!r} not found (stages: {', '.join(s.name for s in stages)})"
    )


def _needed(stages: tuple[StagePlan, ...], target: int) -> tuple[int, ...]:
    needed: set[int] = set()
    todo = [target]
    while todo:  # a work list, not recursion: stages may chain deeply
        i = todo.pop()
        if i not in needed:
            needed.add(i)
            todo += stages[i].reads
    return tuple(sorted(needed))
