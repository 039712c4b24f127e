#!/usr/bin/env python3
"""Pull from a local registry with imgtool and with skopeo, in the same run, alternating who
goes first, and print both wall times and the ratio:

    fresh pull     `imgtool pull` (which, as root, also unpacks every layer as it arrives:
                   ready to run) next to two peers: `skopeo copy docker://... oci:DIR`, which
                   only stores the blobs (no unpack), and `skopeo copy docker://...
                   containers-storage:REF` into a store of its own (overlay driver, graph and
                   run roots under the run's directory), which unpacks every layer as
                   imgtool's pull does: the like-for-like peer
    re-pull        `imgtool pull` of an image already in the store (one manifest HEAD) next
                   to `skopeo inspect docker://...`
    ready to run   `imgtool pull` then the first `imgtool run --rm --network none IMG true`
                   next to `podman pull` (which unpacks too: the fair comparison), podman
                   configured as the tests configure it (tests/support/podman.py), a fresh
                   store each run; skipped with the reason where podman cannot run

Images: "big" (layers of random bytes, --layers x --mib) and "debian" (fixtures' debootstrap
minbase image, three layers). Also printed: imgtool's peak RSS and `python -X importtime`'s
total for a re-pull (what start-up costs before any byte moves).

    python3 benchmarks/pull.py [--image debian big] [--layers 4] [--mib 32 128] [--runs 5]

Targets (issue 13): fresh pull <= 0.8x skopeo copy; re-pull <= 1.5x skopeo inspect; ready to
run <= 0.6x podman pull. The fresh pull's ratio is printed against both skopeo rows.

Nothing is deleted until every image is measured: each run (imgtool's, skopeo's, podman's)
writes into a directory of its own, and all of them go at the end of the script. Right after
a big tree is deleted, ext4's inode allocator scans the recently deleted inodes for every
file it creates (`recently_deleted` under `ext4_create`, a quarter of all samples in `perf
record -a`; an O_CREAT open took ~500 us): GNU tar unpacks the Debian layer in 0.4 s on a
file system that has seen no deletions and in ~2 s right after one. Deleting each run's store
before the next made every later run, imgtool's and podman's alike, measure that instead.
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

from tests.support import podman as podman_support  # noqa: E402
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
    ap.add_argument("--image", nargs="+", default=["debian", "big"], choices=["debian", "big"])
    args = ap.parse_args()
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs Debian's skopeo and docker-registry")
    works: list[Path] = []
    try:
        for image in args.image:
            for mib in args.mib if image == "big" else [0]:
                works.append(Path(tempfile.mkdtemp(prefix="imgtool-bench-")))
                bench(works[-1], image, args.layers, mib, args.runs)
    finally:
        for work in works:  # only now: see the docstring
            for root in sorted(work.glob("podman*")):
                podman_support.Podman.configure(root, "localhost").close()
            for root in sorted(work.glob("containers-storage*")):
                unmount_overlay_home(root)
            shutil.rmtree(work, ignore_errors=True)


def make_image(kind: str, layout: Path, layers: int, mib: int) -> None:
    """In a child process: a fork inherits this process's peak RSS, which would then be
    counted as imgtool's."""
    cmd = [sys.executable, str(REPO / "fixtures" / "make_images.py"), kind, str(layout)]
    if kind == "big":
        cmd += ["--layers", str(layers), "--mib", str(mib)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def importtime_ms(cmd: list[str], env: dict[str, str]) -> float:
    """`python -X importtime`'s cumulative total of the top-level imports, in ms."""
    r = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], env=env, capture_output=True, text=True
    )
    total = 0
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[2].startswith(" "):
            name = parts[2]
            if not name.startswith("  ") and parts[1].strip().isdigit():
                total += int(parts[1])  # a top-level import: its cumulative microseconds
    return total / 1000


def ratio_line(label: str, a: list[float], b: list[float], peer: str, target: float) -> None:
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"  {label:<10} imgtool median {ma * 1000:7.0f} ms   {peer} median {mb * 1000:7.0f} ms")
    print(f"  {'':<10} ratio imgtool/{peer.split()[0]} {ma / mb:.2f}  (target <= {target:.2f})")


def podman_pull(root: Path, host: str, ref: str, env: dict[str, str]) -> float:
    """Wall seconds of one `podman pull` into a fresh podman store at `root` (a new
    directory, left for `podman_support.Podman.close` at the end of the script)."""
    root.mkdir()
    podman = podman_support.Podman.configure(root, host)
    cmd = [str(podman_support.PODMAN), "pull", "-q", "--signature-policy", str(podman.policy)]
    return timed([*cmd, ref], {**env, **podman.env})[0]


def unmount_overlay_home(root: Path) -> None:
    """containers/storage's overlay driver bind-mounts its home on itself and leaves it so.
    Unmounted without asking os.path.ismount first: a bind mount within one file system has
    its parent's device, so ismount says False; umount only fails where nothing is mounted."""
    overlay = root / "graph" / "overlay"
    subprocess.run(["umount", "--lazy", str(overlay)], stderr=subprocess.DEVNULL, check=False)


def skopeo_to_storage(root: Path, host: str, ref: str, env: dict[str, str]) -> float:
    """Wall seconds of one `skopeo copy` into a fresh containers-storage store at `root`
    (configured as the podman oracle's: overlay, graph and run roots under `root`), which
    unpacks every layer as it stores it."""
    root.mkdir()
    conf = podman_support.Podman.configure(root, host)
    cmd = ["skopeo", "copy", "--quiet", "--policy", str(conf.policy), "--src-tls-verify=false"]
    return timed([*cmd, f"docker://{ref}", f"containers-storage:{ref}"], {**env, **conf.env})[0]


def ready_to_run(store: Path, ref: str, env: dict[str, str]) -> float:
    """Wall seconds of `imgtool pull` followed by the first `imgtool run` of the image."""
    base = [sys.executable, "-m", "imgtool", "--root", str(store)]
    wall = timed([*base, "pull", "-q", ref], env)[0]
    return wall + timed([*base, "run", "--rm", "--network", "none", ref, "true"], env)[0]


def bench(work: Path, kind: str, layers: int, mib: int, runs: int) -> None:
    layout = work / "layout"
    make_image(kind, layout, layers, mib)
    size = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
    reg = Registry(work / "registry").start()
    try:
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                f"oci:{layout}:latest",
                f"docker://{reg.host}/bench/img:latest",
                "--dest-tls-verify=false",
            ],
            check=True,
        )
        ref = f"{reg.host}/bench/img:latest"
        env = {**os.environ, "HOME": str(work / "home")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user runs it: byte-compiled
        fresh: tuple[list[float], list[float]] = ([], [])
        unpacked: list[float] = []  # skopeo copy -> containers-storage, in turn with fresh's
        again: tuple[list[float], list[float]] = ([], [])
        rss: list[int] = []
        ready: tuple[list[float], list[float]] = ([], [])
        no_podman = podman_support.unavailable()
        inspect = ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"]
        for i in range(runs):
            # every run in new directories, none deleted before the end (see the docstring)
            store, out = work / f"store{i}", work / f"skopeo{i}"
            mine_cmd = [sys.executable, "-m", "imgtool", "--root", str(store), "pull", "-q"]
            mine_cmd.append(ref)
            skopeo_cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
            skopeo_cmd += [f"docker://{ref}", f"oci:{out}:latest"]
            # rotate who goes first, so that none always meets a warmer cache
            for who in (0, 1, 2)[i % 3 :] + (0, 1, 2)[: i % 3]:
                if who == 0:
                    wall, peak = timed(mine_cmd, env)
                    fresh[0].append(wall)
                    rss.append(peak)
                    again[0].append(timed(mine_cmd, env)[0])
                elif who == 1:
                    fresh[1].append(timed(skopeo_cmd, env)[0])
                    again[1].append(timed(inspect, env)[0])
                else:
                    storage = work / f"containers-storage{i}"
                    unpacked.append(skopeo_to_storage(storage, reg.host, ref, env))
            if kind == "debian" and not no_podman:  # "big" has no `true` to run
                for who in (0, 1) if i % 2 == 0 else (1, 0):
                    if who == 0:
                        ready[0].append(ready_to_run(work / f"ready{i}", ref, env))
                    else:
                        ready[1].append(podman_pull(work / f"podman{i}", reg.host, ref, env))
        imports = importtime_ms(mine_cmd, env)
    finally:
        reg.stop()
    shape = "debootstrap minbase + 2 small" if kind == "debian" else f"{layers} x {mib} MiB random"
    print(f"image {kind}: {shape} layers, {size / 1e6:.1f} MB compressed, {runs} runs")
    ratio_line("fresh pull", *fresh, "skopeo copy -> oci:", 0.8)
    ratio_line("", fresh[0], unpacked, "skopeo copy -> containers-storage:", 0.8)
    ratio_line("re-pull", *again, "skopeo inspect", 1.5)
    if kind != "debian":
        pass
    elif no_podman:
        print(f"  ready to run: podman skipped: {no_podman}")
    else:
        ratio_line("ready", *ready, "podman pull", 0.6)
    print(f"  imgtool peak RSS {max(rss) / 1e6:.0f} MB; re-pull import time {imports:.0f} ms")


if __name__ == "__main__":
    main()
