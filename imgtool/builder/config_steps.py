"""The instructions that change the image's configuration (and WORKDIR, which may also make
its directory): one small function each, taking the typed instruction. Each returns whether
the step was found in a cache (only WORKDIR makes a layer)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgtool import inroot
from imgtool.builder.cache import _key
from imgtool.builder.common import ImageState, Layer, _StageContext
from imgtool.builder.layered import owner_in, parents_like_lowers
from imgtool.builder.sourcetree import Comps
from imgtool.containerfile import instructions as ins
from imgtool.containerfile import shell, values
from imgtool.errors import BuildError, ContainerfileError

if TYPE_CHECKING:
    from imgtool.builder.session import BuildSession

Env = Mapping[str, str]


def _bad(s: BuildSession, t: ins.Typed, text: str) -> ContainerfileError:
    return ContainerfileError(text, file=s.file_label, line=t.source.line)


def arg(s: BuildSession, state: ImageState, t: ins.Arg, ctx: _StageContext, env: Env) -> bool:
    for name, default in t.names:
        if name in s.opts.build_args:
            ctx.args[name] = s.opts.build_args[name]
        elif default is not None:
            ctx.args[name] = shell.process_word(default, env)
        elif name in ctx.meta:
            ctx.args[name] = ctx.meta[name]
        if name in ctx.args:  # else declared but unset, as BuildKit leaves it
            ctx.used_args[name] = ctx.args[name]
    state.key = _key(state.key, "ARG", sorted(ctx.args.items()))
    return False


def env_(s: BuildSession, state: ImageState, t: ins.Env, ctx: _StageContext, env: Env) -> bool:
    # every value sees the environment as it was before this instruction
    pairs = [(k, shell.process_word(v, env)) for k, v in t.pairs]
    for k, v in pairs:
        state.set_env(k, v)
    s.history(state, f"ENV {' '.join(f'{k}={v}' for k, v in pairs)}")
    # the chain key holds every earlier ENV: this step adds only its own pairs
    state.key = _key(state.key, "ENV", pairs)
    return False


def label(s: BuildSession, state: ImageState, t: ins.Label, ctx: _StageContext, env: Env) -> bool:
    cfg = state.config["config"]
    labels = cfg.get("Labels") or {}
    for k, v in t.pairs:
        labels[shell.process_word(k, env)] = shell.process_word(v, env)
    cfg["Labels"] = labels
    s.history(state, f"LABEL {' '.join(f'{k}={v}' for k, v in t.pairs)}")
    return False


def command(
    s: BuildSession, state: ImageState, t: ins.Command, ctx: _StageContext, env: Env
) -> bool:
    cfg = state.config["config"]
    value = list(t.argv) if t.json else (ctx.shell(cfg) + list(t.argv) if t.argv else [])
    kw = "entrypoint" if t.entrypoint else "cmd"
    cfg["Entrypoint" if t.entrypoint else "Cmd"] = value
    if t.entrypoint and not ctx.cmd_set:
        cfg.pop("Cmd", None)  # docker: a new ENTRYPOINT drops the base's CMD
    ctx.cmd_set = ctx.cmd_set or not t.entrypoint
    s.history(state, f"{kw.upper()} {json.dumps(value)}")
    state.key = _key(state.key, kw, value)
    return False


def user(s: BuildSession, state: ImageState, t: ins.User, ctx: _StageContext, env: Env) -> bool:
    cfg = state.config["config"]
    cfg["User"] = shell.process_word(t.value, env)
    s.history(state, f"USER {cfg['User']}")
    state.key = _key(state.key, "USER", cfg["User"])
    return False


def expose(s: BuildSession, state: ImageState, t: ins.Expose, ctx: _StageContext, env: Env) -> bool:
    cfg = state.config["config"]
    ports = cfg.get("ExposedPorts") or {}
    for word in t.ports:
        p = shell.process_word(word, env)
        if not values.valid_port(p):  # again, expanded
            raise _bad(s, t, f"EXPOSE: invalid port {p!r} (PORT[-PORT][/tcp|/udp|/sctp])")
        ports[p if "/" in p else f"{p}/tcp"] = {}
    cfg["ExposedPorts"] = ports
    s.history(state, f"EXPOSE {' '.join(ports)}")
    return False


def volume(s: BuildSession, state: ImageState, t: ins.Volume, ctx: _StageContext, env: Env) -> bool:
    cfg = state.config["config"]
    vols = cfg.get("Volumes") or {}
    for word in t.paths:
        vols[shell.process_word(word, env)] = {}
    cfg["Volumes"] = vols
    s.history(state, f"VOLUME {list(vols)}")
    return False


def shell_(s: BuildSession, state: ImageState, t: ins.Shell, ctx: _StageContext, env: Env) -> bool:
    state.config["config"]["Shell"] = list(t.argv)
    s.history(state, f"SHELL {json.dumps(list(t.argv))}")
    state.key = _key(state.key, "SHELL", list(t.argv))
    return False


def stopsignal(
    s: BuildSession, state: ImageState, t: ins.StopSignal, ctx: _StageContext, env: Env
) -> bool:
    cfg = state.config["config"]
    cfg["StopSignal"] = shell.process_word(t.value, env)
    if not values.valid_signal(cfg["StopSignal"]):  # again, expanded
        raise _bad(s, t, f"STOPSIGNAL: invalid signal {cfg['StopSignal']!r}")
    s.history(state, f"STOPSIGNAL {cfg['StopSignal']}")
    return False


def maintainer(
    s: BuildSession, state: ImageState, t: ins.Maintainer, ctx: _StageContext, env: Env
) -> bool:
    state.config["author"] = t.value
    s.history(state, f"MAINTAINER {t.value}")
    return False


def onbuild(
    s: BuildSession, state: ImageState, t: ins.Onbuild, ctx: _StageContext, env: Env
) -> bool:
    cfg = state.config["config"]
    cfg["OnBuild"] = (cfg.get("OnBuild") or []) + [t.trigger]
    s.history(state, f"ONBUILD {t.trigger}")
    return False


def healthcheck(
    s: BuildSession, state: ImageState, t: ins.Healthcheck, ctx: _StageContext, env: Env
) -> bool:
    state.config["config"]["Healthcheck"] = {"Test": list(t.test), **dict(t.options)}
    kind, *command = t.source.args
    shown = json.dumps(command) if t.source.json else " ".join(command)
    s.history(state, f"HEALTHCHECK {kind} {shown}".rstrip())
    return False


def workdir(
    s: BuildSession, state: ImageState, t: ins.Workdir, ctx: _StageContext, env: Env
) -> bool:
    """WORKDIR: the directory is made (with its missing parents, owned by the USER) in a
    layer of its own when the image lacks it, as BuildKit does; else only history."""
    cfg = state.config["config"]
    path = shell.process_word(t.value, env)
    wd = os.path.normpath(os.path.join(cfg.get("WorkingDir") or "/", path))
    if path.endswith("/") and wd != "/":
        wd += "/"  # kept, as Docker keeps it
    cfg["WorkingDir"] = wd
    found = s.stack(state).lookup(wd)
    if found.st is not None:
        if not stat.S_ISDIR(found.st.st_mode):
            raise BuildError(f"WORKDIR {wd}: not a directory in the image")
        s.history(state, f"WORKDIR {wd}")
        state.key = _key(state.key, "WORKDIR", wd)
        return False
    name = cfg.get("User") or ""
    uid, gid = owner_in(s.stack(state), name, "USER") if name else (0, 0)
    key = _key(state.key, "WORKDIR", wd, "/".join(found.comps), uid, gid)
    hit = s.cached(ctx, t, {"parent": state.key, "instruction": wd}, key)
    if hit is None:
        layer = _workdir_layer(s, state, found.comps, uid, gid)
        s.cache.put(key, layer)
    s.add_layer(state, ctx, hit or layer, f"WORKDIR {wd}", key)
    return hit is not None


def _workdir_layer(s: BuildSession, state: ImageState, comps: Comps, uid: int, gid: int) -> Layer:
    stack = s.stack(state)
    stage_dir = Path(tempfile.mkdtemp(prefix="workdir.", dir=s.work))
    try:
        with inroot.opened(inroot.open_root(str(stage_dir))) as stage:
            os.close(inroot.mkdirs(stage, "/".join(comps)))
            for i in range(1, len(comps) + 1):
                rel = "/".join(comps[:i])
                if stack.lookup(rel, follow_last=False).st is None:  # made here: the user's
                    with inroot.opened(inroot.walk(stage, rel, follow_last=False)) as fd:
                        os.chown(inroot.fd_path(fd), uid, gid)
            parents_like_lowers(stack, stage, "/".join(comps) + "/")
        return s.layer_from_dir(stage_dir)
    finally:
        with contextlib.suppress(OSError):
            inroot.remove_tree(stage_dir)


# each instruction kind's function; the builder binds them to its session
ConfigStep = Callable[["BuildSession", ImageState, Any, _StageContext, Env], bool]
BY_KIND: dict[type, ConfigStep] = {
    ins.Arg: arg,
    ins.Env: env_,
    ins.Label: label,
    ins.Command: command,
    ins.Workdir: workdir,
    ins.User: user,
    ins.Expose: expose,
    ins.Volume: volume,
    ins.Shell: shell_,
    ins.StopSignal: stopsignal,
    ins.Maintainer: maintainer,
    ins.Onbuild: onbuild,
    ins.Healthcheck: healthcheck,
}
