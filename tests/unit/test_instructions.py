"""Typed instructions: flags and values are checked when the Containerfile is read, before
any step runs (each case here used to pass `build --check` and fail, if at all, mid-build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgtool import oci
from imgtool.builder import BuildOptions
from imgtool.builder.engine import check
from imgtool.containerfile import instructions as ins
from imgtool.containerfile.parser import parse
from imgtool.errors import ContainerfileError


def one(text: str) -> ins.Typed:
    cf = parse("FROM scratch\n" + text, "Containerfile", lambda _: None)
    return ins.typed(cf.instructions[1], "Containerfile")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RUN --bogus=1 true", "unknown flag --bogus for RUN"),
        ("EXPOSE abc", "EXPOSE: invalid port 'abc'"),
        ("EXPOSE 70000", "EXPOSE: invalid port '70000'"),
        ("STOPSIGNAL SIGNOPE", "STOPSIGNAL: invalid signal 'SIGNOPE'"),
        ("RUN --network=bridge true", "RUN --network=bridge: expected default, host or none"),
        ("RUN --security=insecure true", "RUN --security=insecure is not supported"),
        ("RUN --mount=type=nfs,target=/x true", "--mount: unsupported type 'nfs'"),
        ("RUN --mount=type=cache true", "--mount=type=cache needs a target"),
        ("RUN --mount=type=tmpfs,target=/t,size=lots true", "size: 'lots' is not a size"),
        ("RUN --mount=type=bind,target=/x,colour=red true", "--mount: unknown option 'colour'"),
        ("RUN --mount=type=cache,target=/x,sharing=locked true", "sharing=locked"),
        ("RUN --mount=type=bind,target=/x,rw=maybe true", "readwrite=maybe: expected true"),
        ("COPY --chmod=u+q a /b", "u+q"),
        ("COPY --parents=yes a /b", "--parents=yes: expected true or false"),
        ("COPY --from=a --from=b x /y", "--from given more than once"),
        ("COPY --from x /y", "--from needs a value"),
        ("COPY --checksum=sha256:00 a /b", "unknown flag --checksum for COPY"),
        ("ADD --parents a /b", "unknown flag --parents for ADD"),
        ("COPY ../secret /x", "COPY source '../secret' is outside the build context"),
        ('COPY ["only"]', "COPY needs a source and a destination"),
        ("SHELL /bin/bash -c", "SHELL needs the JSON form"),
        ("HEALTHCHECK --interval=soon CMD true", "--interval=soon is not a duration"),
        ("HEALTHCHECK --retries=x CMD true", "--retries=x is not a whole number"),
        ("HEALTHCHECK echo", "HEALTHCHECK needs CMD or NONE"),
        ('HEALTHCHECK CMD ["a", 1]', "the JSON form must be an array of strings"),
        ("ONBUILD RUN --bogus true", "unknown flag --bogus for RUN"),
        ("LABEL --x=1 a=b", "unknown flag --x for LABEL"),  # not a label named --x
        ("ENV --x=1 a=b", "unknown flag --x for ENV"),
        ("ARG --x=1 A", "unknown flag --x for ARG"),
        ("FROM --bogus=1 busybox", "unknown flag --bogus for FROM"),
    ],
)
def test_refused_before_anything_runs(text: str, message: str) -> None:
    with pytest.raises(ContainerfileError, match="Containerfile:2") as e:
        one(text)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "text",
    [
        "EXPOSE $PORT",  # checked once expanded
        "STOPSIGNAL ${SIG}",
        "COPY --chmod=$MODE a /b",
        "RUN --mount=type=tmpfs,target=/t,size=$SIZE true",
        "EXPOSE 80/tcp 53/udp 8000-8010",
        "STOPSIGNAL SIGRTMIN+3",
        "COPY --chmod=a=rX,u+w --exclude=*.md --exclude=*.txt --parents a /b/",
        "RUN --mount=type=cache,target=/c,sharing=shared,ro --network=none true",
    ],
)
def test_accepted_and_left_for_expansion(text: str) -> None:
    one(text)


def test_flags_and_values_are_typed() -> None:
    run = one("RUN --network=default --mount=type=secret,id=k,dst=/k,required cat /k")
    assert isinstance(run, ins.Run) and run.network == "host" and not run.json
    (mount,) = run.mounts
    assert (mount.kind, mount.target, mount.get("id"), mount.is_true("required")) == (
        "secret",
        "/k",
        "k",
        True,
    )
    copy = one("COPY --from=build --chown=1:2 --link -- -file /dst/")
    assert isinstance(copy, ins.Copy)
    assert (copy.from_, copy.chown, copy.link, copy.sources, copy.dest) == (
        "build",
        "1:2",
        True,
        ("-file",),
        "/dst/",
    )
    health = one('HEALTHCHECK --interval=1m30s --retries=3 CMD ["curl", "-f", "x"]')
    assert isinstance(health, ins.Healthcheck)
    assert health.test == ("CMD", "curl", "-f", "x")
    assert dict(health.options) == {"Interval": 90 * 10**9, "Retries": 3}
    env = one("ENV a=1 b=$a")
    assert isinstance(env, ins.Env) and env.pairs == (("a", "1"), ("b", "$a"))
    arg = one("ARG A B=2")
    assert isinstance(arg, ins.Arg) and arg.names == (("A", None), ("B", "2"))
    onbuild = one("ONBUILD COPY a /b")
    assert isinstance(onbuild, ins.Onbuild) and isinstance(onbuild.instruction, ins.Copy)


def test_a_repeated_mount_key_takes_the_last_value_as_buildkit_does() -> None:
    run = one("RUN --mount=type=cache,type=tmpfs,target=/a,size=8m,target=/b,size=1k true")
    assert isinstance(run, ins.Run)
    (mount,) = run.mounts
    assert (mount.kind, mount.target, mount.get("size")) == ("tmpfs", "/b", "1k")
    with pytest.raises(ContainerfileError, match="size"):
        one("RUN --mount=type=tmpfs,target=/a,size=1k,size=lots true")  # the last is checked


def test_invalid_json_is_the_shell_form() -> None:
    """As BuildKit does for HEALTHCHECK too (it used to be an error here)."""
    health = one('HEALTHCHECK CMD ["true"')
    assert isinstance(health, ins.Healthcheck) and health.test == ("CMD-SHELL", '["true"')


def test_from_platform_is_expanded_with_the_global_args(tmp_path: Path) -> None:
    opts = BuildOptions(context=tmp_path / "does-not-exist")
    text = "ARG ARCH=arm64\nFROM --platform=$BUILDPLATFORM busybox\nFROM --platform=linux/$ARCH x\n"
    plan = check(text, "Containerfile", opts, print)
    host = oci.Platform.host()
    assert plan.stages[0].platform == f"{host.os}/{host.architecture}" + (
        f"/{host.variant}" if host.variant else ""
    )
    assert plan.stages[1].platform == "linux/arm64"
    assert plan.stages[0].base == "busybox" and plan.stages[1].base == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM --platform=arm64 busybox\n", "--platform=arm64: expected os/arch"),
        ("FROM --platform=$NOPE busybox\n", "--platform=: expected os/arch"),
        ("FROM busybox AS a\nFROM --platform=linux/arm64 a\n", "'a' is a stage"),
    ],
)
def test_from_platform_refused_before_anything_runs(
    text: str, message: str, tmp_path: Path
) -> None:
    opts = BuildOptions(context=tmp_path / "does-not-exist")
    with pytest.raises(ContainerfileError, match=message):
        check(text, "Containerfile", opts, print)


def test_check_runs_parse_typing_and_plan_only(tmp_path: Path) -> None:
    opts = BuildOptions(context=tmp_path / "does-not-exist")  # nothing is read: no I/O
    plan = check("FROM scratch AS a\nFROM a\nEXPOSE 80\n", "Containerfile", opts, print)
    assert [st.name for st in plan.stages] == ["a", "1"] and plan.stages[1].reads == (0,)
    with pytest.raises(ContainerfileError, match="unknown flag --bogus"):
        check("FROM scratch\nRUN --bogus=1 true\n", "Containerfile", opts, print)
    with pytest.raises(ContainerfileError, match="circular dependency"):
        check("FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\n", "C", opts, print)
