"""The registry as the build cache CI runners share, as a user types it: two stores are two
runners that start empty. The second runs no RUN step and gives the same image; a changed file
re-runs exactly the steps after it; mode=min leaves earlier stages out; mounts=true carries a
cache mount's content to a fresh store; type=local does the same through a directory."""

from __future__ import annotations

import os
import re
from itertools import count
from pathlib import Path

import pytest

from imgtool.buildcache.mounts import mount_dir
from imgtool.store import Store
from tests.conftest import Result, imgtool
from tests.support.registry import Registry

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (namespaces, mounts)"),
]

# The last RUN writes the time: had it run again, the image's digest would differ.
CONTAINERFILE = """\
FROM busybox AS deps
RUN echo deps > /deps.txt
FROM busybox
COPY --from=deps /deps.txt /deps.txt
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy
COPY b.txt /b.txt
RUN cat /b.txt > /b.copy && date +%s%N > /when
"""
LINES = {"deps RUN": 2, "COPY deps": 4, "COPY a": 5, "RUN a": 6, "COPY b": 7, "RUN b": 8}
_refs = count()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    return ctx


def runner(tmp_path: Path, name: str) -> Store:
    return Store(tmp_path / f"runner-{name}")


def build(store: Store, ctx: Path, *flags: str) -> Result:
    r = imgtool("build", "--explain-cache", "-t", "app:1", *flags, str(ctx),
                env={"IMGTOOL_ROOT": str(store.root)}, timeout=900)  # fmt: skip
    assert r.code == 0, r.err
    return r


def image(store: Store) -> str:
    return store.find("app:1")[1].digest


def hits_and_misses(r: Result) -> tuple[set[int], set[int]]:
    text = r.out + r.err
    hit = {int(n) for n in re.findall(r"cache hit at line (\d+)", text)}
    miss = {int(n) for n in re.findall(r"cache miss at line (\d+)", text)}
    return hit, miss


def cache(reg: Registry) -> str:
    return f"{reg.host}/app/cache{next(_refs)}"


def test_a_second_runner_runs_no_step_and_gives_the_same_image(
    hub: Registry, context: Path, tmp_path: Path
) -> None:
    ref = cache(hub)
    a, b = runner(tmp_path, "a"), runner(tmp_path, "b")
    build(a, context, "--cache-to", f"type=registry,ref={ref},mode=max")
    r = build(b, context, "--cache-from", f"type=registry,ref={ref}")
    hit, miss = hits_and_misses(r)
    assert miss == set() and hit == set(LINES.values())
    assert image(b) == image(a)  # the time-stamping RUN did not run again


def test_a_changed_file_reruns_exactly_the_steps_after_it(
    hub: Registry, context: Path, tmp_path: Path
) -> None:
    ref = cache(hub)
    a, b = runner(tmp_path, "a"), runner(tmp_path, "b")
    build(a, context, "--cache-to", f"type=registry,ref={ref},mode=max")
    (context / "b.txt").write_text("b changed\n")
    r = build(b, context, "--cache-from", f"type=registry,ref={ref}")
    hit, miss = hits_and_misses(r)
    assert miss == {LINES["COPY b"], LINES["RUN b"]}
    assert hit == {LINES["deps RUN"], LINES["COPY deps"], LINES["COPY a"], LINES["RUN a"]}
    assert "registry" in r.out + r.err  # a hit says where it came from


def test_mode_min_leaves_the_earlier_stage_out(
    hub: Registry, context: Path, tmp_path: Path
) -> None:
    ref = cache(hub)
    a, b = runner(tmp_path, "a"), runner(tmp_path, "b")
    build(a, context, "--cache-to", f"type=registry,ref={ref}")  # mode=min is the default
    r = build(b, context, "--cache-from", f"type=registry,ref={ref}")
    hit, miss = hits_and_misses(r)
    assert miss == {LINES["deps RUN"]}  # the deps stage is only exported with mode=max
    assert LINES["RUN b"] in hit


def test_a_directory_cache_round_trips(hub: Registry, context: Path, tmp_path: Path) -> None:
    where = tmp_path / "cache"
    a, b = runner(tmp_path, "a"), runner(tmp_path, "b")
    build(a, context, "--cache-to", f"type=local,dest={where},mode=max")
    r = build(b, context, "--cache-from", f"type=local,src={where}")
    assert hits_and_misses(r)[1] == set()
    assert image(b) == image(a)


def test_cache_mounts_reach_a_fresh_runner_with_mounts_true(hub: Registry, tmp_path: Path) -> None:
    ctx = tmp_path / "mounts"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        "FROM busybox\n"
        "ARG RUNNER\n"
        "RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs "
        "echo $RUNNER >> /var/cache/pkgs/log && cp /var/cache/pkgs/log /log\n"
    )
    ref = cache(hub)
    a, b = runner(tmp_path, "a"), runner(tmp_path, "b")
    build(a, ctx, "--build-arg", "RUNNER=a", "--cache-to", f"type=registry,ref={ref},mounts=true")
    assert (mount_dir(a, "pkgs") / "log").read_text() == "a\n"
    flags = ("--build-arg", "RUNNER=b", "--cache-from", f"type=registry,ref={ref},mounts=true")
    build(b, ctx, *flags)
    assert (mount_dir(b, "pkgs") / "log").read_text() == "a\nb\n"  # a's content, then b's


def test_a_bad_cache_spec_is_one_line(context: Path, tmp_path: Path) -> None:
    r = imgtool("build", "--cache-to", "type=registry,ref=x,mode=huge", str(context))
    assert r.code != 0
    assert "mode='huge'" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flag", "spec", "culprit"),
    [
        ("--cache-from", "type=registry,ref=x,mode=max", "mode= chooses what --cache-to exports"),
        ("--cache-from", "type=local,dest=d", "dest= is where --cache-to writes"),
        ("--cache-to", "type=local,src=s", "src= is what --cache-from reads"),
    ],
)
def test_a_key_only_the_other_flag_uses_is_refused_before_any_step(
    tmp_path: Path, flag: str, spec: str, culprit: str
) -> None:
    """Accepted, these would be ignored: the build would run as if they were not there."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")  # no pull
    (ctx / "a.txt").write_text("a\n")
    store = runner(tmp_path, "a")
    r = imgtool("build", flag, spec, str(ctx), env={"IMGTOOL_ROOT": str(store.root)})
    assert r.code == 1
    assert r.err.startswith(f"imgtool: {flag} {spec!r}: {culprit}")
    assert len(r.err.strip().splitlines()) == 1
    assert not (store.root / "index.json").exists()  # nothing was built, nothing pulled
