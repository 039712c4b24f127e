#!/usr/bin/env python3
"""Median wall time of `imgtool run --rm busybox true` over N runs, side by side with
`runc run` and `crun run` on a bundle of the same image (made by `umoci unpack`), and
`podman run --rm` (configured by tests/support/podman.py, as the confinement tests run it), each
with no network and with its default network, printed as ratios to runc and podman. Also the
`python -X importtime` total of each imgtool command. Needs root.

    sudo /path/to/venv/bin/python benchmarks/run.py [--runs 20] [--fix-hybrid-cgroups]
    sudo /path/to/venv/bin/python benchmarks/run.py --phases   # where imgtool's time goes

Run it with the interpreter of a byte-compiled `pip install .` (as a user runs imgtool; an
editable install's import finder costs ms of its own); PYTHONDONTWRITEBYTECODE is dropped from
the commands' environment. Targets (issue 13): at most 50 ms with --network none, 60 ms on the
default bridge (at most 0.35x podman).
crun refuses to run on a v1/v2 hybrid host while a controller (hugetlb here) is attached to the
v2 side; --fix-hybrid-cgroups moves hugetlb to a v1 mount of its own first.
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

from benchmarks.timing import medians_alternating  # noqa: E402
from tests.support import podman as podman_support  # noqa: E402


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


def import_ms(cmd: list[str], env: dict[str, str], runs: int = 5) -> float | str:
    """The sum of the top-level `python -X importtime` cumulative figures of `cmd` (an imgtool
    console script): what its imports cost, as Python counts it. The least of `runs` runs: on
    a busy machine one run's figure is mostly the others' load."""
    totals = []
    for _ in range(runs):
        r = subprocess.run(
            [sys.executable, "-X", "importtime", *cmd], env=env, capture_output=True, text=True
        )
        if r.returncode != 0:
            return f"failed: {r.stderr.strip().splitlines()[-1:]}"
        total = 0
        for line in r.stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            # a top-level import: its name right after "| " (nested ones are indented further)
            if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
                total += int(parts[1])
        totals.append(total / 1000)
    return min(totals)


def podman_rows(layout: Path, work: Path, runs: int) -> dict[str, float | str]:
    """podman as the confinement tests configure it (tests/support/podman.py: its own store,
    containers.conf with rlimits it may set here, cgroupfs), no network and its bridge."""
    if podman_support.unavailable():
        return {"podman run --rm": f"skipped: {podman_support.unavailable()}"}
    root = work / "podman"
    root.mkdir()
    podman = podman_support.Podman.configure(root, "127.0.0.1:5000")
    try:
        image = podman.pull(f"oci:{layout}:latest")
        env = {**os.environ, **podman.env}
        base = [str(podman_support.PODMAN), "run", "--rm"]
        return {
            "podman run --rm --network none": median_ms(
                [*base, "--network", "none", image, "true"], runs, env=env
            ),
            "podman run --rm --network bridge": median_ms(
                [*base, "--network", "bridge", image, "true"], runs, env=env
            ),
        }
    except podman_support.PodmanUnavailable as e:
        return {"podman run --rm": f"failed: {e}"}
    finally:
        podman.close()


def fix_hybrid() -> None:
    v2 = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if v2.exists() and "hugetlb" in v2.read_text().split():
        target = Path("/sys/fs/cgroup/hugetlb")
        target.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(target)], check=True
        )


def imgtool_command() -> list[str]:
    # the console script beside this interpreter: a PATH lookup can find a wrapper (pyenv's
    # shim costs 70 ms of bash and pyenv before imgtool starts)
    script = Path(sys.executable).parent / "imgtool"
    return [str(script)] if script.exists() else [sys.executable, "-m", "imgtool"]


def imgtool_rows(
    layout: Path, runs: int, baseline: str | None = None
) -> tuple[dict[str, float | str], dict[str, float | str]]:
    """(wall times, import times) of imgtool's commands on the store `layout`; with
    `baseline` (another install's imgtool script), that one's too, run in alternation."""
    env = {**os.environ, "IMGTOOL_ROOT": str(layout)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user runs it: byte-compiled
    cmd = imgtool_command()
    times: dict[str, float | str] = {}
    imports: dict[str, float | str] = {}
    for label, net in (("--network none", ["--network", "none"]), ("bridge", [])):
        argv = ["run", "--rm", *net, "latest", "true"]
        cmds = {f"imgtool run --rm ({label})": [*cmd, *argv]}
        if baseline:
            cmds[f"baseline run --rm ({label})"] = [baseline, *argv]
        times.update(medians_alternating(cmds, runs, env))
        imports[f"imgtool run --rm ({label})"] = import_ms([*cmd[-1:], *argv], env)
    for argv in (["images"], ["--help"]):
        imports[f"imgtool {argv[0]}"] = import_ms([*cmd[-1:], *argv], env)
    return times, imports


# One `run --rm --network none latest true` in the interpreter of this install, its phases
# timed by wrapping the engine's functions (perf_counter, ms): printed as JSON on stderr.
PHASES_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import imgtool.cli, imgtool.cli.fast, imgtool.cli.actions, imgtool.runner
from imgtool import containers, runner
from imgtool.sandbox import cgroups, runner as sandbox_runner
spent = {"imports": (time.perf_counter() - t0) * 1000}
def timed(owner, name, label):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0) + (time.perf_counter() - start) * 1000
    setattr(owner, name, wrapper)
timed(runner, "prepare", "prepare")
timed(sandbox_runner, "run", "sandbox (fork to exit)")
timed(sandbox_runner, "_read_until_exec", "  waiting for the set-up")
timed(cgroups.Cgroup, "create", "cgroup create")
timed(cgroups.Cgroup, "destroy", "teardown: cgroup")
timed(containers.Containers, "remove", "teardown: container dir")
sys.argv = ["imgtool", "run", "--rm", "--network", "none", "latest", "true"]
start = time.perf_counter()
try:
    imgtool.cli.main()
except SystemExit:
    pass
spent["main"] = (time.perf_counter() - start) * 1000
print(json.dumps(spent), file=sys.stderr)
"""


def phase_rows(layout: Path, runs: int) -> dict[str, float]:
    """Where the time of `imgtool run --rm --network none` goes, medians of `runs`: the
    interpreter's start and exit (the wall time less what the process measured itself),
    imports, prepare (image, checks, records), the sandbox from fork to exit and, within it,
    the wait for the set-up to exec, and the teardown."""
    env = {**os.environ, "IMGTOOL_ROOT": str(layout)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    samples: dict[str, list[float]] = {}
    for i in range(runs + 1):
        t0 = time.perf_counter()
        r = subprocess.run(  # not from the checkout: `-c` would import its imgtool
            [sys.executable, "-c", PHASES_SCRIPT],
            env=env,
            cwd=layout,
            capture_output=True,
            text=True,
        )
        wall = (time.perf_counter() - t0) * 1000
        if r.returncode != 0 or not r.stderr.strip():
            raise SystemExit(f"phases: {r.stderr.strip()[-300:]}")
        spent = json.loads(r.stderr.strip().splitlines()[-1])
        spent["wall"] = wall
        spent["interpreter start and exit"] = wall - spent["imports"] - spent["main"]
        if i:  # the first run warms the caches
            for label, value in spent.items():
                samples.setdefault(label, []).append(value)
    return {label: statistics.median(values) for label, values in samples.items()}


def runtime_rows(layout: Path, work: Path, runs: int) -> dict[str, float | str]:
    """runc and crun on an OCI bundle of the same image (umoci unpack), no network."""
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
    rows: dict[str, float | str] = {}
    for runtime in ("runc", "crun"):
        if shutil.which(runtime):
            rows[f"{runtime} run"] = median_ms(
                [runtime, "run", f"bench-{os.getpid()}"], runs, cwd=bundle
            )
        else:
            rows[f"{runtime} run"] = "not installed"
    return rows


def report(runs: int, results: dict[str, float | str], imports: dict[str, float | str]) -> None:
    print(f"median of {runs} runs, busybox `true`:")
    for name, value in results.items():
        if not isinstance(value, float):
            print(f"  {name:40s} {value}")
            continue
        podman = "podman run --rm --network " + ("bridge" if "bridge" in name else "none")
        bases = {"runc": results.get("runc run"), "podman": results.get(podman)}
        if name.startswith("imgtool run"):  # the same command of --baseline, if measured
            bases["baseline"] = results.get(name.replace("imgtool", "baseline", 1))
        ratios = [f"{value / b:.2f}x {k}" for k, b in bases.items() if isinstance(b, float)]
        print(f"  {name:40s} {value:7.1f} ms  ({', '.join(ratios)})")
    print("python -X importtime, top-level total (least of 5 runs):")
    for name, value in imports.items():
        shown = f"{value:7.1f} ms" if isinstance(value, float) else value
        print(f"  {name:40s} {shown}")
    print("targets: run <= 50 ms (--network none), <= 60 ms (bridge), <= 0.35x podman")


def report_phases(runs: int, phases: dict[str, float]) -> None:
    print(f"imgtool run --rm --network none latest true, phases (median of {runs}, ms):")
    for label in (
        "wall",
        "interpreter start and exit",
        "imports",
        "main",
        "prepare",
        "cgroup create",
        "sandbox (fork to exit)",
        "  waiting for the set-up",
        "teardown: cgroup",
        "teardown: container dir",
    ):
        if label in phases:
            print(f"  {label:40s} {phases[label]:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--fix-hybrid-cgroups", action="store_true")
    ap.add_argument(
        "--baseline",
        help="another install's imgtool script (e.g. of the previous commit), run in turn with "
        "this one: the change's effect as a ratio",
    )
    ap.add_argument(
        "--phases",
        action="store_true",
        help="only where the time of one `run --rm --network none` goes (no peers)",
    )
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
        if args.phases:
            report_phases(args.runs, phase_rows(layout, args.runs))
            return
        results, imports = imgtool_rows(layout, args.runs, args.baseline)
        results.update(runtime_rows(layout, work, args.runs))
        results.update(podman_rows(layout, work, args.runs))
        results["python3 -c pass (interpreter start)"] = median_ms(
            [sys.executable, "-c", "pass"], args.runs
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args.runs, results, imports)


if __name__ == "__main__":
    main()
