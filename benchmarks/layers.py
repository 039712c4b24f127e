#!/usr/bin/env python3
"""`imgtool layers` on the debootstrapped Debian image: first (indexes every layer's tar headers
from the blobs) and again (from the per-layer index cached in the store).

    python3 benchmarks/layers.py

Target (issue 5): under 2 s once the layers are in the store.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fixtures import make_images  # noqa: E402


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="imgtool-layersbench-"))
    try:
        store = make_images.make_debian(work / "store")
        cmd = [sys.executable, "-m", "imgtool", "--root", str(store), "layers", "latest"]
        first = timed(cmd)
        again = min(timed(cmd) for _ in range(3))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("imgtool layers, Debian minbase image (3 layers, ~6000 files, 211 MB uncompressed):")
    print(f"  first run (reads the layers): {first:.2f} s  (target < 2 s)")
    print(f"  again (cached index):         {again:.2f} s")


if __name__ == "__main__":
    main()
