#!/usr/bin/env python3
"""Pull a multi-layer image (>= 100 MB) from a local registry with imgtool and with skopeo, in
the same run, and print both wall times, the ratio and imgtool's peak RSS.

    python3 benchmarks/pull.py [--layers 4] [--mib 30] [--runs 3]

Targets (issue 2): imgtool's wall time at most skopeo's; peak RSS under 150 MB.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.registry import Registry  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument(
        "--mib",
        type=int,
        nargs="+",
        default=[32, 128],
        help="layer sizes to measure, one image each",
    )
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for mib in args.mib:
        bench(args.layers, mib, args.runs)


def bench(layers: int, mib: int, runs: int) -> None:
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs Debian's skopeo and docker-registry")
    work = Path(tempfile.mkdtemp(prefix="imgtool-bench-"))
    try:
        # made in a child process: a fork inherits this process's peak RSS, which would then
        # be counted as imgtool's
        layout = work / "layout"
        subprocess.run(
            [
                sys.executable,
                str(REPO / "fixtures" / "make_images.py"),
                "big",
                str(layout),
                "--layers",
                str(layers),
                "--mib",
                str(mib),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        size = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
        reg = Registry(work / "registry").start()
        try:
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    f"oci:{layout}:latest",
                    f"docker://{reg.host}/bench/big:latest",
                    "--dest-tls-verify=false",
                ],
                check=True,
            )
            ref = f"{reg.host}/bench/big:latest"
            env = {**os.environ, "HOME": str(work / "home")}
            mine, theirs, rss = [], [], []
            for i in range(runs):
                # alternate who goes first, so that neither always meets a warmer cache
                store, out = work / f"store{i}", work / f"skopeo{i}"
                mine_cmd = [
                    sys.executable,
                    "-m",
                    "imgtool",
                    "--root",
                    str(store),
                    "pull",
                    "-q",
                    ref,
                ]
                skopeo_cmd = [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    f"docker://{ref}",
                    f"oci:{out}:latest",
                ]
                for who in (0, 1) if i % 2 == 0 else (1, 0):
                    if who == 0:
                        wall, peak = timed(mine_cmd, env)
                        mine.append(wall)
                        rss.append(peak)
                    else:
                        theirs.append(timed(skopeo_cmd, env)[0])
                shutil.rmtree(store)
                shutil.rmtree(out)
        finally:
            reg.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(mine), statistics.median(theirs)
    print(f"image: {layers} layers, {size / 1e6:.1f} MB compressed, {runs} runs")
    print(f"imgtool pull          median {a:.2f} s   (runs: {', '.join(f'{x:.2f}' for x in mine)})")
    print(
        f"skopeo copy -> oci:   median {b:.2f} s   (runs: {', '.join(f'{x:.2f}' for x in theirs)})"
    )
    print(f"ratio imgtool/skopeo  {a / b:.2f}  (target <= 1.00)")
    print(f"imgtool peak RSS      {max(rss) / 1e6:.0f} MB  (target < 150 MB)")


if __name__ == "__main__":
    main()
