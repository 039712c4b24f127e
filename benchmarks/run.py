#!/usr/bin/env python3
"""Median wall time of `imgtool run --rm busybox true` over N runs, side by side with
`runc run` and `crun run` on a bundle of the same image (made by `umoci unpack`), and
`podman run --rm` where installed (with --network none, which is imgtool's default, and with
podman's own default network). Needs root.

    sudo python3 benchmarks/run.py [--runs 20] [--fix-hybrid-cgroups]

Target (issue 3): at most a third of podman's time (about 50 ms where podman takes 150 ms).
crun refuses to run on a v1/v2 hybrid host while a controller (hugetlb here) is attached to the
v2 side; --fix-hybrid-cgroups moves hugetlb to a v1 mount of its own first, as the issue says.
"""

from __future__ import annotations

import argparse
import json
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


def median_ms(
    cmd: list[str], runs: int, cwd: Path | None = None, env: dict[str, str] | None = None
) -> float | str:
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        dt = (time.perf_counter() - t0) * 1000
        if r.returncode != 0:
            return f"failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
        if i:  # the first run warms the caches
            times.append(dt)
    return statistics.median(times)


def fix_hybrid() -> None:
    v2 = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if v2.exists() and "hugetlb" in v2.read_text().split():
        target = Path("/sys/fs/cgroup/hugetlb")
        target.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(target)], check=True
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--fix-hybrid-cgroups", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    if args.fix_hybrid_cgroups:
        fix_hybrid()
    work = Path(tempfile.mkdtemp(prefix="imgtool-runbench-"))
    try:
        layout = work / "store"
        subprocess.run(
            [sys.executable, str(REPO / "fixtures/make_images.py"), "busybox", str(layout)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        env = {**os.environ, "IMGTOOL_ROOT": str(layout)}
        results: dict[str, float | str] = {}
        # the console script beside this interpreter: a PATH lookup can find a wrapper (pyenv's
        # shim costs 70 ms of bash and pyenv before imgtool starts)
        script = Path(sys.executable).parent / "imgtool"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "imgtool"]
        results["imgtool run --rm --network none"] = median_ms(
            [*cmd, "run", "--rm", "--network", "none", "latest", "true"], args.runs, env=env
        )
        results["imgtool run --rm (bridge, the default)"] = median_ms(
            [*cmd, "run", "--rm", "latest", "true"], args.runs, env=env
        )
        bundle = work / "bundle"
        subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
            check=True,
            capture_output=True,
        )
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/true"]
        (bundle / "config.json").write_text(json.dumps(config))
        for runtime in ("runc", "crun"):
            if shutil.which(runtime):
                results[f"{runtime} run"] = median_ms(
                    [runtime, "run", f"bench-{os.getpid()}"], args.runs, cwd=bundle
                )
        if shutil.which("podman"):
            pulled = subprocess.run(
                ["podman", "pull", "-q", f"oci:{layout}:latest"], capture_output=True, text=True
            )
            if pulled.returncode == 0:
                image = pulled.stdout.strip()
                results["podman run --rm --network none"] = median_ms(
                    ["podman", "run", "--rm", "--network", "none", image, "true"], args.runs
                )
                results["podman run --rm (its default network)"] = median_ms(
                    ["podman", "run", "--rm", image, "true"], args.runs
                )
                subprocess.run(["podman", "rmi", "-f", image], capture_output=True)
            else:
                results["podman run --rm"] = f"failed: {pulled.stderr.strip()[-200:]}"
        results["python3 -c pass (interpreter start)"] = median_ms(
            [sys.executable, "-c", "pass"], args.runs
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"median of {args.runs} runs, busybox `true`:")
    base = results.get("runc run")
    for name, value in results.items():
        if isinstance(value, float):
            ratio = f"  ({value / base:.1f}x runc)" if isinstance(base, float) else ""
            print(f"  {name:38s} {value:7.1f} ms{ratio}")
        else:
            print(f"  {name:38s} {value}")


if __name__ == "__main__":
    main()
