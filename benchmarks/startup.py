#!/usr/bin/env python3
"""Median wall time of the commands a user runs most, side by side with their peers (issue 13):

- `imgtool --help` and `imgtool images` (target: at most 60 ms each);
- `imgtool pull` of an image already in the store (one manifest HEAD, nothing else), next to
  `skopeo inspect` of the same image (target: at most 1.5x skopeo);
- `imgtool copy` of busybox from the registry to an OCI layout that has its blobs already
  (start-up, the manifest and the checks), next to `skopeo copy` of the same (issue 12's
  target for every copy: at most 0.8x skopeo; benchmarks/copy_images.py times fresh copies);
- `python3 -c pass`, the floor any Python command stands on.

    python3 benchmarks/startup.py [--runs 20]

Run it with the interpreter of a byte-compiled `pip install .` (not an editable install, whose
import finder costs a few ms of its own), e.g.
    python3 -m venv /tmp/v && /tmp/v/bin/pip install . && /tmp/v/bin/python benchmarks/startup.py
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

from benchmarks.timing import medians_alternating  # noqa: E402
from tests.support.registry import Registry  # noqa: E402


def median_ms(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        dt = (time.perf_counter() - t0) * 1000
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}")
        if i:  # the first run warms the caches
            times.append(dt)
    return statistics.median(times)


def startup_rows(
    imgtool: list[str], baseline: str | None, runs: int, env: dict[str, str]
) -> dict[str, float | str]:
    """`--help` and `images`, with the baseline's run in turn when given."""
    rows: dict[str, float | str] = {}
    for argv in (["--help"], ["images"]):
        cmds = {f"imgtool {argv[0]}": [*imgtool, *argv]}
        if baseline:
            cmds[f"baseline {argv[0]}"] = [baseline, *argv]
        rows.update(medians_alternating(cmds, runs, env))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument(
        "--baseline",
        help="another install's imgtool script (e.g. of the previous commit): its --help, "
        "images, re-pull and copy run in turn with this one's, printed as ratios",
    )
    args = ap.parse_args()
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs Debian's skopeo and docker-registry")
    script = Path(sys.executable).parent / "imgtool"
    imgtool = [str(script)] if script.exists() else [sys.executable, "-m", "imgtool"]
    work = Path(tempfile.mkdtemp(prefix="imgtool-startbench-"))
    try:
        layout = work / "layout"
        subprocess.run(
            [sys.executable, str(REPO / "fixtures/make_images.py"), "busybox", str(layout)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        reg = Registry(work / "registry").start()
        try:
            ref = f"{reg.host}/bench/busybox:latest"
            subprocess.run(
                ["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"docker://{ref}"]
                + ["--dest-tls-verify=false"],
                check=True,
            )
            env = {**os.environ, "HOME": str(work / "home"), "IMGTOOL_ROOT": str(work / "store")}
            subprocess.run([*imgtool, "pull", "-q", ref], env=env, check=True, capture_output=True)
            # the re-pull, skopeo's answer to the same question and the baseline's re-pull,
            # in turn: their ratio is the target's
            pulls = {
                "imgtool pull (already in the store)": [*imgtool, "pull", "-q", ref],
                "skopeo inspect --raw": ["skopeo", "inspect", "--raw", "--tls-verify=false"]
                + [f"docker://{ref}"],
            }
            if args.baseline:
                pulls["baseline pull (already in the store)"] = [args.baseline, "pull", "-q", ref]
            source = f"docker://{ref}"
            copies = {
                "imgtool copy (blobs there)": [*imgtool, "copy", "-q", source]
                + [f"oci:{work / 'copy-imgtool'}:latest"],
                "skopeo copy (blobs there)": ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
                + [source, f"oci:{work / 'copy-skopeo'}:latest"],
            }
            if args.baseline:
                copies["baseline copy (blobs there)"] = [args.baseline, "copy", "-q", source]
                copies["baseline copy (blobs there)"] += [f"oci:{work / 'copy-baseline'}:latest"]
            rows = {
                "python3 -c pass": median_ms([sys.executable, "-c", "pass"], args.runs, env),
                **startup_rows(imgtool, args.baseline, args.runs, env),
                **medians_alternating(pulls, args.runs, env),
                **medians_alternating(copies, args.runs, env),
            }
        finally:
            reg.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"median of {args.runs} runs:")
    for name, value in rows.items():
        base = (
            rows.get(name.replace("imgtool", "baseline", 1)) if name.startswith("imgtool") else None
        )
        both = isinstance(base, float) and isinstance(value, float)
        ratio = f"  ({value / base:.2f}x baseline)" if both else ""  # type: ignore[operator]
        shown = f"{value:7.1f} ms" if isinstance(value, float) else value
        print(f"  {name:38s} {shown}{ratio}")
    pull, skopeo = rows["imgtool pull (already in the store)"], rows["skopeo inspect --raw"]
    if isinstance(pull, float) and isinstance(skopeo, float):
        print(f"  pull / skopeo inspect                  {pull / skopeo:7.2f}x  (target <= 1.5x)")
    copy, skopeo_copy = rows["imgtool copy (blobs there)"], rows["skopeo copy (blobs there)"]
    if isinstance(copy, float) and isinstance(skopeo_copy, float):
        print(
            f"  copy / skopeo copy                     {copy / skopeo_copy:7.2f}x  (target <= 0.8x)"
        )
    print("  --help, images target                  <= 60 ms each")


if __name__ == "__main__":
    main()
