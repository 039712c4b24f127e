"""Typed instructions: one frozen dataclass per Containerfile instruction, flags parsed and
checked, values checked as far as they can be before variable expansion.

`typed(inst, file)` turns a parser `Instruction` into its dataclass or raises a
ContainerfileError naming the file and line. Every dataclass keeps `source`, the parser's
instruction (its line, its original text, its heredocs).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from imgtool.containerfile import values
from imgtool.containerfile.filemode import parse_mode
from imgtool.containerfile.flags import (
    Bad,
    Flags,
    Kind,
    MountSpec,
    bad_of,
    parse_flags,
    parse_mount,
)
from imgtool.containerfile.parser import Instruction


@dataclass(frozen=True)
class From:
    source: Instruction
    image: str  # unexpanded: `FROM $BASE` is expanded with the global ARGs
    name: str | None  # AS name, lower-cased
    platform: str | None = None  # --platform, unexpanded (`--platform=$BUILDPLATFORM`)


@dataclass(frozen=True)
class Run:
    source: Instruction
    command: tuple[str, ...]  # the JSON form's argv, or the shell form's one script
    json: bool
    mounts: tuple[MountSpec, ...]
    network: str  # host (also for "default"), none


@dataclass(frozen=True)
class Copy:
    """COPY and ADD (`add` tells them apart)."""

    source: Instruction
    add: bool
    sources: tuple[str, ...]
    dest: str
    from_: str | None  # --from: a stage or an image
    chown: str | None
    chmod: str | None
    exclude: tuple[str, ...]
    parents: bool
    checksum: str | None  # ADD --checksum for a URL
    link: bool  # --link: the layer does not depend on the ones below (dest not resolved there)


@dataclass(frozen=True)
class KeyValues:
    """ENV and LABEL: (key, unexpanded value) pairs."""

    source: Instruction
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Env(KeyValues):
    pass


@dataclass(frozen=True)
class Label(KeyValues):
    pass


@dataclass(frozen=True)
class Arg:
    source: Instruction
    names: tuple[tuple[str, str | None], ...]  # (name, unexpanded default or None)


@dataclass(frozen=True)
class Command:
    """CMD and ENTRYPOINT."""

    source: Instruction
    entrypoint: bool
    argv: tuple[str, ...]  # the JSON form's, or the shell form's one script (or none)
    json: bool


@dataclass(frozen=True)
class Word:
    """WORKDIR, USER, STOPSIGNAL, MAINTAINER: one unexpanded value."""

    source: Instruction
    value: str


@dataclass(frozen=True)
class Workdir(Word):
    pass


@dataclass(frozen=True)
class User(Word):
    pass


@dataclass(frozen=True)
class StopSignal(Word):
    pass


@dataclass(frozen=True)
class Maintainer(Word):
    pass


@dataclass(frozen=True)
class Expose:
    source: Instruction
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Volume:
    source: Instruction
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Shell:
    source: Instruction
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Healthcheck:
    source: Instruction
    test: tuple[str, ...]  # ("NONE",), ("CMD", argv…) or ("CMD-SHELL", script)
    options: tuple[tuple[str, int], ...]  # (Interval|Timeout|StartPeriod|StartInterval|Retries, n)


@dataclass(frozen=True)
class Onbuild:
    source: Instruction
    trigger: str  # the text the image records, run when a stage builds FROM it
    instruction: Typed


Typed = (
    From
    | Run
    | Copy
    | Env
    | Label
    | Arg
    | Command
    | Workdir
    | User
    | StopSignal
    | Maintainer
    | Expose
    | Volume
    | Shell
    | Healthcheck
    | Onbuild
)

S, B, L = Kind.STRING, Kind.BOOL, Kind.STRINGS
_FLAGS: dict[str, dict[str, Kind]] = {
    "from": {"platform": S},
    "run": {"mount": L, "network": S, "security": S},
    "copy": {"from": S, "chown": S, "chmod": S, "link": B, "exclude": L, "parents": B},
    "add": {"chown": S, "chmod": S, "checksum": S, "link": B, "exclude": L},
    "healthcheck": {"interval": S, "timeout": S, "start-period": S, "start-interval": S},
}
_FLAGS["healthcheck"]["retries"] = S


def typed(inst: Instruction, file: str) -> Typed:
    """The typed instruction, or a ContainerfileError at its line."""
    bad = bad_of(inst, file)
    flags = parse_flags(inst, _FLAGS.get(inst.keyword, {}), bad)
    return _MAKERS[inst.keyword](inst, flags, bad, file)


Maker = Callable[[Instruction, Flags, Bad, str], Typed]


def _from(inst: Instruction, flags: Flags, _b: Bad, _file: str) -> From:
    name = inst.args[2].lower() if len(inst.args) == 3 else None
    return From(inst, inst.args[0], name, flags.string("platform"))


def _run(inst: Instruction, flags: Flags, bad: Bad, _file: str) -> Run:
    network = flags.string("network") or "default"
    if network not in ("default", "host", "none"):
        raise bad(f"RUN --network={network}: expected default, host or none")
    security = flags.string("security") or "sandbox"
    if security != "sandbox":
        raise bad(f"RUN --security={security} is not supported (sandbox only)")
    mounts = tuple(parse_mount(m, bad) for m in flags.strings("mount"))
    network = "host" if network == "default" else network  # a step has the host's network
    return Run(inst, tuple(inst.args), inst.json, mounts, network)


def _copy(inst: Instruction, flags: Flags, bad: Bad, _file: str) -> Copy:
    kw = inst.keyword.upper()
    if len(inst.args) < 2:
        raise bad(f"{kw} needs a source and a destination")
    *sources, dest = inst.args
    chmod = flags.string("chmod")
    if chmod is not None and not values.has_variable(chmod):
        try:
            parse_mode(chmod)
        except ValueError as e:
            raise bad(str(e)) from None
    frm = flags.string("from")
    if frm is None:
        for s in sources:
            clean = os.path.normpath(s)
            if not s.startswith("<<") and "://" not in s and (clean == ".." or clean[:3] == "../"):
                raise bad(f"{kw} source {s!r} is outside the build context")
    return Copy(
        inst,
        inst.keyword == "add",
        tuple(sources),
        dest,
        frm,
        flags.string("chown"),
        chmod,
        flags.strings("exclude"),
        flags.boolean("parents"),
        flags.string("checksum"),
        flags.boolean("link"),
    )


def _env(inst: Instruction, _f: Flags, _b: Bad, _file: str) -> Env:
    return Env(inst, tuple(zip(inst.args[::2], inst.args[1::2], strict=True)))


def _label(inst: Instruction, _f: Flags, _b: Bad, _file: str) -> Label:
    return Label(inst, tuple(zip(inst.args[::2], inst.args[1::2], strict=True)))


def _arg(inst: Instruction, _f: Flags, bad: Bad, _file: str) -> Arg:
    names: list[tuple[str, str | None]] = []
    for word in inst.args:
        name, eq, default = word.partition("=")
        if not name:
            raise bad(f"ARG {word!r}: a name is needed")
        names.append((name, default if eq else None))
    return Arg(inst, tuple(names))


def _command(inst: Instruction, _f: Flags, _b: Bad, _file: str) -> Command:
    return Command(inst, inst.keyword == "entrypoint", tuple(inst.args), inst.json)


def _word(cls: type[Workdir | User | Maintainer]) -> Maker:
    def make(inst: Instruction, _f: Flags, _b: Bad, _file: str) -> Typed:
        return cls(inst, inst.args[0] if inst.args else "")

    return make


def _stopsignal(inst: Instruction, _f: Flags, bad: Bad, _file: str) -> StopSignal:
    sig = inst.args[0]
    if not values.has_variable(sig) and not values.valid_signal(sig):
        raise bad(f"STOPSIGNAL: invalid signal {sig!r}")
    return StopSignal(inst, sig)


def _expose(inst: Instruction, _f: Flags, bad: Bad, _file: str) -> Expose:
    for port in inst.args:
        if not values.has_variable(port) and not values.valid_port(port):
            raise bad(f"EXPOSE: invalid port {port!r} (PORT[-PORT][/tcp|/udp|/sctp])")
    return Expose(inst, tuple(inst.args))


def _volume(inst: Instruction, _f: Flags, bad: Bad, _file: str) -> Volume:
    if not inst.args or any(not p for p in inst.args):
        raise bad("VOLUME needs a path")
    return Volume(inst, tuple(inst.args))


def _shell(inst: Instruction, _f: Flags, bad: Bad, _file: str) -> Shell:
    if not inst.json or not inst.args:
        raise bad('SHELL needs the JSON form: SHELL ["executable", "parameters"]')
    return Shell(inst, tuple(inst.args))


_HEALTH_FLAGS = {
    "interval": "Interval",
    "timeout": "Timeout",
    "start-period": "StartPeriod",
    "start-interval": "StartInterval",
}


def _healthcheck(inst: Instruction, flags: Flags, bad: Bad, _file: str) -> Healthcheck:
    kind = inst.args[0].upper() if inst.args else ""
    if kind == "NONE":
        return Healthcheck(inst, ("NONE",), ())
    if kind != "CMD":
        raise bad("HEALTHCHECK needs CMD or NONE")
    if len(inst.args) < 2:
        raise bad("HEALTHCHECK CMD needs a command")
    test = ("CMD", *inst.args[1:]) if inst.json else ("CMD-SHELL", inst.args[1])
    return Healthcheck(inst, test, _health_options(flags, bad))


def _health_options(flags: Flags, bad: Bad) -> tuple[tuple[str, int], ...]:
    options: list[tuple[str, int]] = []
    for name, key in _HEALTH_FLAGS.items():
        v = flags.string(name)
        if v is not None:
            try:
                options.append((key, values.duration_ns(v)))
            except ValueError:
                raise bad(f"HEALTHCHECK: --{name}={v} is not a duration (e.g. 30s)") from None
    retries = flags.string("retries")
    if retries is not None:
        if not retries.isdigit():
            raise bad(f"HEALTHCHECK: --retries={retries} is not a whole number")
        options.append(("Retries", int(retries)))
    return tuple(options)


def _onbuild(inst: Instruction, _f: Flags, _b: Bad, file: str) -> Onbuild:
    assert inst.sub is not None  # the parser made it
    return Onbuild(inst, inst.args[0], typed(inst.sub, file))


_MAKERS: dict[str, Maker] = {
    "from": _from,
    "run": _run,
    "copy": _copy,
    "add": _copy,
    "env": _env,
    "label": _label,
    "arg": _arg,
    "cmd": _command,
    "entrypoint": _command,
    "workdir": _word(Workdir),
    "user": _word(User),
    "maintainer": _word(Maintainer),
    "stopsignal": _stopsignal,
    "expose": _expose,
    "volume": _volume,
    "shell": _shell,
    "healthcheck": _healthcheck,
    "onbuild": _onbuild,
}
