#!/usr/bin/env python3
"""`imgtool copy` next to `skopeo copy` on the same multi-layer image, both directions:

    registry -> oci dir    docker://127.0.0.1:PORT/bench/big:latest -> oci:DIR:latest
    oci dir -> registry    oci:LAYOUT:latest -> docker://127.0.0.1:PORT/bench/big:latest
                           (a fresh registry for every push, so that neither tool finds a blob
                           already there)

    python3 benchmarks/copy_images.py [--layers 4] [--mib 32 128] [--runs 3]

Prints each side's median wall time and the ratio imgtool/skopeo (below 1: imgtool is faster).
Who goes first alternates from run to run.
"""

from __future__ import annotations

import sys

# this file is named like the standard library's `copy`: its directory must not shadow it
sys.path[:] = [p for p in sys.path if p not in ("", sys.path[0])]

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.registry import Registry  # noqa: E402

IMGTOOL = [sys.executable, "-m", "imgtool"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {r.stderr.decode()}")
    return wall


def make_layout(work: Path, layers: int, mib: int) -> Path:
    layout = work / "layout"
    cmd = [sys.executable, str(REPO / "fixtures" / "make_images.py"), "big", str(layout)]
    cmd += ["--layers", str(layers), "--mib", str(mib)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return layout


def alternate(
    runs: int, mine: Callable[[int], float], theirs: Callable[[int], float]
) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for i in range(runs):
        for who in (0, 1) if i % 2 == 0 else (1, 0):
            (a if who == 0 else b).append((mine if who == 0 else theirs)(i))
    return a, b


def bench_pull(
    work: Path, ref: str, runs: int, env: dict[str, str]
) -> tuple[list[float], list[float]]:
    def mine(i: int) -> float:
        out = work / f"mine-pull{i}"
        wall = timed([*IMGTOOL, "copy", "-q", f"docker://{ref}", f"oci:{out}:latest"], env)
        shutil.rmtree(out)
        return wall

    def theirs(i: int) -> float:
        out = work / f"skopeo-pull{i}"
        cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
        wall = timed([*cmd, f"docker://{ref}", f"oci:{out}:latest"], env)
        shutil.rmtree(out)
        return wall

    return alternate(runs, mine, theirs)


def bench_push(
    work: Path, layout: Path, runs: int, env: dict[str, str]
) -> tuple[list[float], list[float]]:
    def fresh_push(cmd: Callable[[str], list[str]], name: str) -> float:
        reg = Registry(work / name).start()
        try:
            return timed(cmd(f"docker://{reg.host}/bench/big:latest"), env)
        finally:
            reg.stop()
            shutil.rmtree(work / name, ignore_errors=True)

    def mine(i: int) -> float:
        return fresh_push(
            lambda d: [*IMGTOOL, "copy", "-q", f"oci:{layout}:latest", d], f"r-mine{i}"
        )

    def theirs(i: int) -> float:
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest"]
        return fresh_push(lambda d: [*cmd, d], f"r-skopeo{i}")

    return alternate(runs, mine, theirs)


def report(what: str, mine: list[float], theirs: list[float]) -> None:
    a, b = statistics.median(mine), statistics.median(theirs)
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    print(f"  {what:<22} imgtool {a:6.2f} s  skopeo {b:6.2f} s  ratio {a / b:.2f}")
    print(f"  {'':<22} (imgtool runs: {runs(mine)}; skopeo runs: {runs(theirs)})")


def bench(layers: int, mib: int, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="imgtool-bench-copy-"))
    try:
        layout = make_layout(work, layers, mib)
        size = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
        env = {**os.environ, "HOME": str(work / "home"), "IMGTOOL_ROOT": str(work / "store")}
        reg = Registry(work / "registry").start()
        try:
            ref = f"{reg.host}/bench/big:latest"
            seed = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
            subprocess.run([*seed, f"oci:{layout}:latest", f"docker://{ref}"], check=True)
            pulled = bench_pull(work, ref, runs, env)
        finally:
            reg.stop()
        pushed = bench_push(work, layout, runs, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"image: {layers} layers of {mib} MiB, {size / 1e6:.1f} MB compressed, {runs} runs")
    report("registry -> oci dir", *pulled)
    report("oci dir -> registry", *pushed)


def main() -> None:
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs Debian's skopeo and docker-registry")
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument(
        "--mib", type=int, nargs="+", default=[32, 128], help="layer sizes, one image each"
    )
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for mib in args.mib:
        bench(args.layers, mib, args.runs)


if __name__ == "__main__":
    main()
