#!/usr/bin/env python3
"""Cold and fully cached build times of the busybox-based Containerfile.examples, imgtool side
by side with `buildah build --layers` on the same Containerfile in the same run, printed as
ratios (imgtool / buildah; below 1 is faster). Needs root and buildah. The cached builds' CPU
time (user + system, the tool's processes and those it waited for) is shown too: on a machine
shared with other work, wall time swings with the load, CPU time much less.

    sudo python3 benchmarks/build.py [--runs 3]

imgtool runs as a user runs it: byte-compiled (PYTHONDONTWRITEBYTECODE is dropped, and a first
build writes the bytecode). Targets (issue 10): cold and cached at or below buildah's.
A local registry mirrors docker.io for both tools, so `FROM busybox` is served offline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.seeding import seed_busybox  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

EXAMPLES = [
    "hello",
    "multistage",
    "heredocs",
    "users",
    "dockerignore",
    "cache-mount",
    "copy-options",
]


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    return timed_cpu(cmd, env, cwd)[0]


def timed_cpu(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def medians(cmd: list[str], env: dict[str, str], cwd: Path, runs: int) -> tuple[float, float]:
    """The median wall and the median CPU time of `runs` runs."""
    results = [timed_cpu(cmd, env, cwd) for _ in range(runs)]
    return statistics.median(w for w, _ in results), statistics.median(c for _, c in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgtool-buildbench-"))
    reg = Registry(work / "registry").start()
    try:
        conf = seed_busybox(reg, work)
        env = {
            **os.environ,
            "CONTAINERS_REGISTRIES_CONF": str(conf),
            "IMGTOOL_ROOT": str(work / "store"),
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user runs it: bytecode written, reused
        imgtool = [sys.executable, "-m", "imgtool"]
        rows = []
        for name in EXAMPLES:
            ctx = work / name
            shutil.copytree(REPO / "Containerfile.examples" / name, ctx)
            extra: list[str] = []
            expect = json.loads((ctx / "expect.json").read_text())
            for k, v in expect.get("secrets", {}).items():
                (work / k).write_text(v)
                extra += ["--secret", f"id={k},src={work / k}"]
            mine = [*imgtool, "build", "-q", "-t", f"bench-{name}", *extra, str(ctx)]
            timed(mine, env, REPO)  # warm: the base image is pulled once
            cold = statistics.median(
                timed([*mine[:4], "--no-cache", *mine[4:]], env, REPO) for _ in range(args.runs)
            )
            cached, cached_cpu = medians(mine, env, REPO, args.runs)
            theirs_cold = theirs_cached = theirs_cpu = None
            if shutil.which("buildah"):
                bud = [
                    "buildah",
                    "build",
                    "-q",
                    "--force-rm",
                    "--layers",
                    "-t",
                    f"bench-{name}",
                    *extra,
                    ".",
                ]
                try:
                    timed(bud, env, ctx)
                    theirs_cold = statistics.median(
                        timed([*bud[:3], "--no-cache", *bud[3:]], env, ctx)
                        for _ in range(args.runs)
                    )
                    theirs_cached, theirs_cpu = medians(bud, env, ctx, args.runs)
                except SystemExit as e:  # an older buildah may not know heredocs
                    print(f"buildah could not build {name}: {str(e)[-160:]}", file=sys.stderr)
            rows.append((name, cold, cached, theirs_cold, theirs_cached, cached_cpu, theirs_cpu))
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"median of {args.runs} runs (s)  imgtool cold  cached   buildah cold  cached"
        "   ratio cold  cached   cached CPU: imgtool buildah ratio"
    )
    for name, cold, cached, tc, tk, cpu, tcpu in rows:
        ratio = f"{cold / tc:.2f}" if tc else "-"
        cratio = f"{cached / tk:.2f}" if tk else "-"
        tcs = f"{tc:12.2f}" if tc else f"{'-':>12}"
        tks = f"{tk:8.2f}" if tk else f"{'-':>8}"
        cpus = f"{cpu:8.2f} " + (f"{tcpu:7.2f} {cpu / tcpu:5.2f}" if tcpu else f"{'-':>7} {'-':>5}")
        print(
            f"  {name:22s} {cold:12.2f} {cached:7.2f}   {tcs}{tks}   {ratio:>10} {cratio:>7}"
            f"           {cpus}"
        )


if __name__ == "__main__":
    main()
