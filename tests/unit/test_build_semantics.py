"""What instructions mean, built in-process FROM scratch (no RUN, no registry): ENV and ARG
expansion, the platform ARGs, WORKDIR, COPY's owners and modes, stage cycles, parser warnings,
the cost of a step, and the work directories a build leaves."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from imgtool import oci
from imgtool.builder import BuildOptions, build, workspace
from imgtool.cleanup import gc
from imgtool.containerfile.filemode import parse_mode
from imgtool.errors import ContainerfileError, ImgtoolError
from imgtool.store import Store

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="file owners need root")


def _build(tmp_path: Path, text: str, files: dict[str, str] | None = None, **kw):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(text)
    for name, content in (files or {}).items():
        (ctx / name).write_text(content)
        os.chmod(ctx / name, 0o644)
    said: list[str] = []
    store = Store(tmp_path / "store")
    opts = BuildOptions(context=ctx, tags=["t:1"], output=said.append, **kw)
    build(store, opts)
    return store, store.image("t:1"), said


def _env(img) -> dict[str, str]:
    return dict(x.partition("=")[::2] for x in img.config.config.get("Env") or [])


def _members(store: Store, img) -> dict[str, tarfile.TarInfo]:
    out = {}
    for d in img.manifest.layers:
        raw = gzip.decompress(store.read_blob(d.digest))
        with tarfile.open(fileobj=io.BytesIO(raw)) as t:
            for m in t:
                out[m.name.rstrip("/")] = m
    return out


def test_env_values_see_the_environment_before_the_instruction(tmp_path: Path) -> None:
    _, img, _ = _build(tmp_path, "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\n")
    assert _env(img) == {"abc": "bye", "def": "hello"}
    assert img.config.config["Env"] == ["abc=bye", "def=hello"]  # replaced in place


def test_arg_without_a_default_is_unset(tmp_path: Path) -> None:
    text = (
        "ARG G\nFROM scratch\nARG G\nARG NAME\n"
        "ENV name=${NAME-unset} empty=${NAME:-x} global=${G-unset}\n"
    )
    _, img, _ = _build(tmp_path, text)
    assert _env(img) == {"name": "unset", "empty": "x", "global": "unset"}
    _, img, _ = _build(tmp_path, text, build_args={"NAME": "", "G": "g"})
    assert _env(img) == {"name": "", "empty": "x", "global": "g"}


def test_platform_args_are_global_and_declared_in_a_stage(tmp_path: Path) -> None:
    host = oci.Platform.host()
    text = (
        "ARG FROMARCH=$TARGETARCH\nFROM scratch\nARG FROMARCH\nARG TARGETARCH\nARG BUILDPLATFORM\n"
        "ENV a=$FROMARCH t=$TARGETARCH b=$BUILDPLATFORM os=${TARGETOS-undeclared}\n"
    )
    _, img, _ = _build(tmp_path, text)
    spec = f"linux/{host.architecture}" + (f"/{host.variant}" if host.variant else "")
    assert _env(img) == {
        "a": host.architecture,
        "t": host.architecture,
        "b": spec,
        "os": "undeclared",  # not declared in the stage: not seen there, as in BuildKit
    }


@root_only
def test_workdir_makes_its_directory_for_the_user_and_keeps_a_slash(tmp_path: Path) -> None:
    store, img, _ = _build(
        tmp_path, "FROM scratch\nUSER 1000:1001\nWORKDIR /srv/app/\nWORKDIR /srv/app\n"
    )
    assert img.config.config["WorkingDir"] == "/srv/app"
    members = _members(store, img)
    assert {p: (m.isdir(), m.uid, m.gid) for p, m in members.items()} == {
        "srv": (True, 1000, 1001),
        "srv/app": (True, 1000, 1001),
    }
    assert len(img.manifest.layers) == 1  # the second WORKDIR found its directory there
    _, img, _ = _build(tmp_path, "FROM scratch\nWORKDIR /srv/app/\n")
    assert img.config.config["WorkingDir"] == "/srv/app/"


@root_only
def test_copy_from_a_stage_keeps_owners_unless_chown(tmp_path: Path) -> None:
    text = (
        "FROM scratch AS src\nCOPY --chown=1000:1001 f /f\n"
        "FROM scratch\nCOPY --from=src /f /kept\nCOPY --from=src --chown=5:6 /f /chowned\n"
        "COPY f /context\n"
    )
    store, img, _ = _build(tmp_path, text, {"f": "x"})
    owners = {p: (m.uid, m.gid) for p, m in _members(store, img).items()}
    assert owners == {"kept": (1000, 1001), "chowned": (5, 6), "context": (0, 0)}


def test_chmod_symbolic_octal_and_from_an_arg(tmp_path: Path) -> None:
    text = (
        "FROM scratch\nARG MODE=440\nCOPY --chmod=u+x f /a\nCOPY --chmod=$MODE f /b\n"
        "ADD --chmod=+x f /c\nCOPY --chmod=go-r,u=rwx f /d\n"
    )
    store, img, _ = _build(tmp_path, text, {"f": "x"})
    modes = {p: m.mode for p, m in _members(store, img).items()}
    assert modes == {"a": 0o744, "b": 0o440, "c": 0o755, "d": 0o700}


def test_a_bad_chmod_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ContainerfileError) as e:
        _build(tmp_path, "FROM scratch\nCOPY --chmod=u+q f /a\n", {"f": "x"})
    assert "--chmod=u+q" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "spec",
    ["u+x", "+x", "a=rX", "go-w", "g=u", "u+s,g+s", "o+t", "=r,u+w", "ug+rw,o-rwx", "a-x+X"],
)
@pytest.mark.parametrize("start", [0o644, 0o755, 0o600, 0o4711])
@pytest.mark.parametrize("is_dir", [False, True])
def test_symbolic_modes_as_chmod_applies_them(
    spec: str, start: int, is_dir: bool, tmp_path: Path
) -> None:
    target = tmp_path / "t"
    target.mkdir() if is_dir else target.touch()
    os.chmod(target, start)
    old = os.umask(0)  # chmod(1) without a class respects the umask: clear it
    try:
        subprocess.run(["chmod", spec, str(target)], check=True)
    finally:
        os.umask(old)
    want = os.stat(target).st_mode & 0o7777
    if is_dir:  # GNU chmod keeps a directory's set-id bits unless told otherwise
        want = want & ~0o6000 | parse_mode(spec).apply(start, True) & 0o6000
    assert parse_mode(spec).apply(start, is_dir) == want


@pytest.mark.parametrize("bad", ["", "u+q", "8", "17777", "u", "x+r", "+x,", "755 "])
def test_bad_modes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--chmod"):
        parse_mode(bad)


@pytest.mark.parametrize(
    "text",
    [
        "FROM scratch AS a\nCOPY --from=a /f /f\n",
        "FROM scratch AS a\nCOPY --from=b /f /f\nFROM scratch AS b\nCOPY --from=a /f /f\n",
        "FROM scratch\nCOPY --from=0 /f /f\n",
    ],
)
def test_a_stage_reading_itself_or_a_later_stage_is_a_cycle(tmp_path: Path, text: str) -> None:
    with pytest.raises(ContainerfileError, match="circular dependency"):
        _build(tmp_path, text)


def test_copy_parents_and_exclude(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    for d in ("x/y", "home"):
        (ctx / d).mkdir(parents=True)
    files = ["x/a.txt", "x/b.md", "x/y/c.txt", "hom.txt", "home/keep.sh", "home/skip.txt"]
    text = (
        "FROM scratch\n"
        "COPY --parents x/y/c.txt x/a.txt /p/\n"
        "COPY --parents ./x/./y/*.txt /q\n"
        "COPY --parents x /r/\n"
        "COPY --exclude=*.txt hom* /m/\n"
        "COPY --exclude=*.md --exclude=y x /e/\n"
        "ADD --exclude=skip* home /add/\n"
    )
    store, img, _ = _build(tmp_path, text, {f: f for f in files})
    got = sorted(p for p, m in _members(store, img).items() if m.isfile())
    assert got == [
        "add/keep.sh",
        "e/a.txt",
        "m/keep.sh",
        "p/x/a.txt",
        "p/x/y/c.txt",
        "q/y/c.txt",
        "r/x/a.txt",
        "r/x/b.md",
        "r/x/y/c.txt",
    ]


def test_an_excluded_file_is_not_part_of_the_cache_key(tmp_path: Path) -> None:
    (tmp_path / "ctx" / "d").mkdir(parents=True)
    text = "FROM scratch\nCOPY --exclude=*.log d /d/\n"
    _, first, _ = _build(tmp_path, text, {"d/keep": "1", "d/x.log": "a"})
    _, again, said = _build(tmp_path, text, {"d/keep": "1", "d/x.log": "b"})
    assert again.manifest.layers == first.manifest.layers
    assert any("CACHED" in x for x in said)


def test_legacy_label_builds_with_a_warning(tmp_path: Path) -> None:
    _, img, said = _build(tmp_path, "FROM scratch\nLABEL owner Jane Doe\n")
    assert img.config.config["Labels"] == {"owner": "Jane Doe"}
    assert any("'LABEL key value' is the legacy form" in x for x in said)


def _key_payloads(tmp_path: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of what each ENV step's cache key hashes, and of the environment it reads."""
    from imgtool.builder import config_steps

    sizes: list[int] = []
    real = config_steps._key

    def spy(*parts: object) -> str:
        if len(parts) > 1 and parts[1] == "ENV":
            sizes.append(len(repr(parts[2:])))
        return real(*parts)

    monkeypatch.setattr(config_steps, "_key", spy)
    d = tmp_path / str(n)
    d.mkdir()
    _build(d, "FROM scratch\nENV V=v\n" + "".join(f"ENV V{i}=x$V\n" for i in range(n)))
    return sizes


def test_an_env_step_costs_the_same_after_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timing: the cache key of the 300th ENV hashes no more than the 3rd's (it grew with
    every earlier ENV), and config.Env is parsed once per stage, not once per step."""
    from imgtool.builder import common

    parsed = 0
    real_env = common.ImageState.__dict__["env"].fget

    def counting_env(self: common.ImageState) -> dict[str, str]:
        nonlocal parsed
        parsed += int(self._env is None)
        return real_env(self)

    monkeypatch.setattr(common.ImageState, "env", property(counting_env))
    sizes = _key_payloads(tmp_path, 300, monkeypatch)
    assert len(sizes) == 301 and max(sizes) <= sizes[2] + 10
    assert parsed <= 2


def test_a_failed_build_leaves_no_work_directory(tmp_path: Path) -> None:
    with pytest.raises(ImgtoolError):
        _build(tmp_path, "FROM scratch\nCOPY missing /x\n")
    assert list((tmp_path / "store" / "build").iterdir()) == []


def test_gc_removes_work_directories_no_build_holds(tmp_path: Path) -> None:
    store = Store(tmp_path / "store").init()
    parent = store.root / "build"
    held, fd = workspace.hold_new(parent)  # a running build's
    (held / "from.x" / "deep").mkdir(parents=True)
    # a build that was killed: its directory is there, its lock died with its process
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from imgtool.builder import workspace; from pathlib import Path;"
            f"p, _ = workspace.hold_new(Path({str(parent)!r})); (p / 'f').write_text('x');"
            "import os; os._exit(9)",
        ],
        check=False,
    )
    assert killed.returncode == 9
    abandoned = [p for p in parent.iterdir() if p != held]
    assert len(abandoned) == 1 and (abandoned[0] / "f").exists()
    assert gc(store, dry_run=True).work_dirs == (abandoned[0].name,)
    assert abandoned[0].exists()
    result = gc(store)
    assert result.work_dirs == (abandoned[0].name,)
    assert sorted(parent.iterdir()) == [held]  # the running build's is left alone
    workspace.release(held, fd)
    assert not held.exists()


def test_every_instruction_kind_has_one_step() -> None:
    """RUN and COPY/ADD have classes of their own; every other typed kind one function in
    config_steps' table (a kind missing from it would fail only when a build used it)."""
    from typing import get_args

    from imgtool.builder import config_steps
    from imgtool.containerfile import instructions as ins

    others = set(get_args(ins.Typed)) - {ins.From, ins.Run, ins.Copy}
    assert set(config_steps.BY_KIND) == others
