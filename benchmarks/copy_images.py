#!/usr/bin/env python3
"""`imgtool copy` next to `skopeo copy` on the same images, both directions:

    registry -> oci dir    docker://127.0.0.1:PORT/bench/NAME:latest -> oci:DIR:latest
    oci dir -> registry    oci:LAYOUT:latest -> docker://127.0.0.1:PORT/bench/NAME:latest
                           (a fresh registry for every push, so that neither tool finds a blob
                           already there)

    /path/to/venv/bin/python benchmarks/copy_images.py [--layers 4] [--mib 32 128] [--runs 3]

One image of `--layers` random (incompressible) layers per `--mib` size, and busybox (one
small layer: what every copy pays whatever its size shows there). Run it with the interpreter
of a byte-compiled `pip install .`: imgtool runs as its console script beside that
interpreter, as a user runs it. Prints each side's median wall time and the ratio
imgtool/skopeo (below 1: imgtool is faster); who goes first alternates from run to run. Every
copy is checked against skopeo's of the same image: the same manifest digest and the same
blobs, in the layout and in the registry.
"""

from __future__ import annotations

import sys

# this file is named like the standard library's `copy`: its directory must not shadow it
sys.path[:] = [p for p in sys.path if p not in ("", sys.path[0])]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.run import imgtool_command  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

Times = tuple[list[float], list[float]]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {r.stderr.decode()}")
    return wall


def make_layout(work: Path, name: str, layers: int, mib: int) -> Path:
    layout = work / f"layout-{name}"
    cmd = [sys.executable, str(REPO / "fixtures" / "make_images.py")]
    if name == "busybox":
        cmd += ["busybox", str(layout)]
    else:
        cmd += ["big", str(layout), "--layers", str(layers), "--mib", str(mib)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return layout


def layout_contents(layout: Path) -> tuple[list[str], list[str]]:
    """(the digests index.json names, every blob's digest): what two copies must agree on."""
    index = json.loads((layout / "index.json").read_text())
    named = sorted(d["digest"] for d in index["manifests"])
    return named, sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())


def registry_digest(host: str, repository: str) -> str:
    accept = "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"
    req = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/latest", method="HEAD", headers={"Accept": accept}
    )
    with urllib.request.urlopen(req) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def same(what: str, mine: object, theirs: object) -> None:
    if mine != theirs:
        raise SystemExit(f"{what}: imgtool and skopeo differ: {mine} != {theirs}")


def alternate(runs: int, mine: Callable[[int], float], theirs: Callable[[int], float]) -> Times:
    a: list[float] = []
    b: list[float] = []
    for i in range(runs):
        for who in (0, 1) if i % 2 == 0 else (1, 0):
            (a if who == 0 else b).append((mine if who == 0 else theirs)(i))
    return a, b


def bench_pull(work: Path, ref: str, runs: int, env: dict[str, str]) -> Times:
    copies: dict[str, tuple[list[str], list[str]]] = {}

    def pull(cmd: list[str], out: Path) -> float:
        wall = timed([*cmd, f"docker://{ref}", f"oci:{out}:latest"], env)
        copies[cmd[0]] = layout_contents(out)
        shutil.rmtree(out)
        return wall

    def mine(i: int) -> float:
        return pull([*imgtool_command(), "copy", "-q"], work / f"mine-pull{i}")

    def theirs(i: int) -> float:
        cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
        return pull(cmd, work / f"skopeo-pull{i}")

    times = alternate(runs, mine, theirs)
    same(f"pull of {ref}", *copies.values())
    return times


def bench_push(work: Path, layout: Path, runs: int, env: dict[str, str]) -> Times:
    digests: dict[str, str] = {}

    def fresh_push(cmd: list[str], name: str) -> float:
        reg = Registry(work / name).start()
        try:
            wall = timed([*cmd, f"docker://{reg.host}/bench/image:latest"], env)
            digests[cmd[0]] = registry_digest(reg.host, "bench/image")
            return wall
        finally:
            reg.stop()
            shutil.rmtree(work / name, ignore_errors=True)

    def mine(i: int) -> float:
        return fresh_push([*imgtool_command(), "copy", "-q", f"oci:{layout}:latest"], f"r-mine{i}")

    def theirs(i: int) -> float:
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest"]
        return fresh_push(cmd, f"r-skopeo{i}")

    times = alternate(runs, mine, theirs)
    named, _ = layout_contents(layout)
    same(f"push of {layout.name}", *digests.values())
    same(f"push of {layout.name}", [*digests.values()][0], named[0])
    return times


def report(what: str, mine: list[float], theirs: list[float]) -> None:
    a, b = statistics.median(mine), statistics.median(theirs)
    runs = lambda xs: ", ".join(f"{x:.3f}" for x in xs)  # noqa: E731
    print(f"  {what:<22} imgtool {a:6.3f} s  skopeo {b:6.3f} s  ratio {a / b:.2f}")
    print(f"  {'':<22} (imgtool runs: {runs(mine)}; skopeo runs: {runs(theirs)})")


def bench(name: str, layers: int, mib: int, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="imgtool-bench-copy-"))
    try:
        layout = make_layout(work, name, layers, mib)
        size = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
        env = {**os.environ, "HOME": str(work / "home"), "IMGTOOL_ROOT": str(work / "store")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user runs it: byte-compiled
        reg = Registry(work / "registry").start()
        try:
            ref = f"{reg.host}/bench/image:latest"
            seed = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
            subprocess.run([*seed, f"oci:{layout}:latest", f"docker://{ref}"], check=True)
            pulled = bench_pull(work, ref, runs, env)
        finally:
            reg.stop()
        pushed = bench_push(work, layout, runs, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shape = "busybox" if name == "busybox" else f"{layers} layers of {mib} MiB"
    print(f"image: {shape}, {size / 1e6:.1f} MB compressed, {runs} runs")
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
    bench("busybox", 1, 0, args.runs)
    for mib in args.mib:
        bench("big", args.layers, mib, args.runs)


if __name__ == "__main__":
    main()
