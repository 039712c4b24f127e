"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import subprocess
import time


def medians_alternating(
    cmds: dict[str, list[str]], runs: int, env: dict[str, str]
) -> dict[str, float | str]:
    """Median wall times of several commands run in turn (a, b, a, b...): on a shared, noisy
    machine each sees the same moments, so their ratio holds where separate runs would not."""
    times: dict[str, list[float]] = {label: [] for label in cmds}
    failed: dict[str, float | str] = {}
    for i in range(runs + 1):
        for label, cmd in cmds.items():
            if label in failed:
                continue
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            dt = (time.perf_counter() - t0) * 1000
            if r.returncode != 0:
                failed[label] = f"failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
            elif i:  # the first round warms the caches
                times[label].append(dt)
    return {label: failed.get(label) or statistics.median(t) for label, t in times.items()}
