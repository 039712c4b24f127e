#!/usr/bin/env python3
"""A remote-cached build in a fresh store (a CI runner that starts empty), imgtool side by
side with `buildah build --layers --cache-to/--cache-from` on the same Containerfile and the
same local registry, in the same run. Needs root.

    sudo python3 benchmarks/build_cache.py [--runs 3]

One build per tool exports the cache (not timed); then each timed run starts from an empty
store (imgtool: a new IMGTOOL_ROOT; buildah: a new --root and --runroot) and imports it.
Target (issue 12): imgtool at most 0.8x buildah's time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.seeding import seed_busybox  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

CONTAINERFILE = """\
FROM docker.io/library/busybox:latest
RUN dd if=/dev/urandom of=/blob1 bs=1M count=4 2>/dev/null
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy && dd if=/dev/urandom of=/blob2 bs=1M count=4 2>/dev/null
COPY b.txt /b.txt
RUN cat /b.txt > /b.copy
"""


STEPS = 5  # RUN, COPY, RUN, COPY, RUN: every one must come from the cache in a timed run


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-800:]}")
    return took, r.stdout + r.stderr


def all_cached(tool: str, output: str) -> bool:
    """A timed run counts only if every step hit the remote cache (else it measured a build)."""
    if tool == "imgtool":
        return f"({STEPS} steps, {STEPS} cached)" in output
    return output.count("Using cache") == STEPS


def imgtool_cmd(env: dict[str, str], root: Path, ctx: Path, flag: str, spec: str) -> tuple:
    cmd = [sys.executable, "-m", "imgtool", "build", "-t", "bench-cache", flag, spec, "."]
    return cmd, {**env, "IMGTOOL_ROOT": str(root)}, ctx


def buildah_cmd(env: dict[str, str], root: Path, ctx: Path, flag: str, repo: str) -> tuple:
    cmd = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run"), "build",
           "--layers", "--tls-verify=false", flag, repo, "-t", "bench-cache", "."]  # fmt: skip
    return cmd, env, ctx


def fresh_runs(
    make: Callable[[Path, str, str], tuple], work: Path, tool: str, runs: int, spec: str
) -> list[float]:
    times = []
    for i in range(runs):
        root = work / f"{tool}-fresh-{i}"
        cmd, env, ctx = make(root, "--cache-from", spec)
        took, output = run(cmd, env, ctx)
        if not all_cached(tool, output):
            raise SystemExit(f"{tool}: a fresh-store build missed the cache:\n{output[-1500:]}")
        times.append(took)
        shutil.rmtree(root, ignore_errors=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("buildah"):
        raise SystemExit("buildah is not installed: this benchmark compares with it")
    work = Path(tempfile.mkdtemp(prefix="imgtool-cachebench-"))
    reg = Registry(work / "registry").start()
    try:
        env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(seed_busybox(reg, work))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # imgtool as a user runs it: byte-compiled
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Containerfile").write_text(CONTAINERFILE)
        (ctx / "a.txt").write_text("a\n")
        (ctx / "b.txt").write_text("b\n")
        mine_spec = f"type=registry,ref={reg.host}/bench/imgtool-cache"  # --cache-from's
        theirs_repo = f"{reg.host}/bench/buildah-cache"

        def mine(root: Path, flag: str, spec: str) -> tuple:
            return imgtool_cmd(env, root, ctx, flag, spec)

        def theirs(root: Path, flag: str, spec: str) -> tuple:
            return buildah_cmd(env, root, ctx, flag, spec)

        # also byte-compiles imgtool; mode= is --cache-to's alone
        run(*mine(work / "imgtool-seed", "--cache-to", f"{mine_spec},mode=max"))
        run(*theirs(work / "buildah-seed", "--cache-to", theirs_repo))
        mine_t = fresh_runs(mine, work, "imgtool", args.runs, mine_spec)
        theirs_t = fresh_runs(theirs, work, "buildah", args.runs, theirs_repo)
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    m, t = statistics.median(mine_t), statistics.median(theirs_t)
    print(f"remote-cached build in a fresh store, median of {args.runs} runs (s)")
    print(f"  imgtool {m:6.2f}   buildah {t:6.2f}   ratio {m / t:.2f} (target <= 0.80)")
    print(f"  imgtool runs: {', '.join(f'{x:.2f}' for x in mine_t)}")
    print(f"  buildah runs: {', '.join(f'{x:.2f}' for x in theirs_t)}")


if __name__ == "__main__":
    main()
