#!/usr/bin/env python3
"""Unpacking a Debian-based multi-layer image: imgtool (per-layer overlay directories, as
`run` needs them, and a flattened rootfs, as `imgtool unpack` writes it) side by side with
`umoci unpack` on the same OCI layout, in the same run. Needs root and debootstrap (the Debian
root is cached in /var/cache/imgtool-fixtures).

    sudo python3 benchmarks/unpack.py [--runs 3]

Target (issue 3): imgtool at most as slow as umoci.

Every run writes into a directory of its own, all deleted at the end: on an ext4 without a
journal, files created soon after a big tree was deleted make the allocator scan the deleted
inodes (see benchmarks/pull.py), which would slow every run after the first.
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

from fixtures import make_images  # noqa: E402

CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], name: str = "") -> float:
    """Wall seconds; the CPU seconds (user + system) go to CPU[name]. The disk of a small VM
    can dominate wall time (writeback of the unpacked files), so both are printed."""
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed")
    CPU.setdefault(name, []).append(usage.ru_utime + usage.ru_stime)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgtool-unpackbench-"))
    try:
        layout = make_images.make_debian(work / "layout")
        size = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
        py = [sys.executable, "-c"]
        layers_cmd = (
            "import sys; from imgtool.store import Store; "
            "from imgtool.layer.unpacked import LayerStore; s = Store(sys.argv[1]); "
            "LayerStore(s).unpack(s.image('latest'))"
        )
        rows: dict[str, list[float]] = {
            "umoci unpack": [],
            "imgtool unpack (flattened)": [],
            "imgtool layers (overlay dirs, as run)": [],
        }
        for i in range(args.runs):
            out = work / f"umoci{i}"
            rows["umoci unpack"].append(
                timed(["umoci", "unpack", "--image", f"{layout}:latest", str(out)], "umoci unpack")
            )
            out = work / f"flat{i}"
            rows["imgtool unpack (flattened)"].append(
                timed(
                    [
                        sys.executable,
                        "-m",
                        "imgtool",
                        "--root",
                        str(layout),
                        "unpack",
                        "latest",
                        str(out),
                    ],
                    "imgtool unpack (flattened)",
                )
            )
            copy = work / f"store{i}"
            shutil.copytree(layout, copy)
            rows["imgtool layers (overlay dirs, as run)"].append(
                timed([*py, layers_cmd, str(copy)], "imgtool layers (overlay dirs, as run)")
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(rows["umoci unpack"])
    print(f"Debian minbase, 3 layers, {size / 1e6:.0f} MB compressed; median of {args.runs}:")
    for name, times in rows.items():
        m = statistics.median(times)
        cpu = statistics.median(CPU[name])
        cpu_base = statistics.median(CPU["umoci unpack"])
        print(
            f"  {name:40s} wall {m:6.2f} s ({m / base:.2f}x umoci)   "
            f"cpu {cpu:6.2f} s ({cpu / cpu_base:.2f}x umoci)"
        )


if __name__ == "__main__":
    main()
