#!/usr/bin/env python3
"""Bridge networking: time from `imgtool run -d -p …` until the container answers on the
published port, and throughput through the published port next to the same server (busybox
httpd) on the host's loopback, which is the limit. Needs root.

    sudo python3 benchmarks/network.py [--runs 5] [--mib 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_answer(url: str, timeout: float = 20) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"{url} never answered")


def throughput(url: str) -> float:
    t0 = time.perf_counter()
    n = 0
    with urllib.request.urlopen(url, timeout=60) as r:
        while chunk := r.read(1 << 20):
            n += len(chunk)
    return n / (time.perf_counter() - t0) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    work = Path(tempfile.mkdtemp(prefix="imgtool-netbench-"))
    imgtool = [sys.executable, "-m", "imgtool", "--root", str(work / "store")]
    try:
        subprocess.run(
            [sys.executable, str(REPO / "fixtures/make_images.py"), "busybox", str(work / "store")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        script = (
            f"mkdir -p /www && echo ok > /www/index.html && dd if=/dev/zero of=/www/big "
            f"bs=1M count={args.mib} 2>/dev/null; exec httpd -f -p 80 -h /www"
        )
        starts = []
        rates = []
        for i in range(args.runs):
            port = free_port()
            t0 = time.perf_counter()
            subprocess.run(
                [
                    *imgtool,
                    "run",
                    "-d",
                    "--name",
                    f"bench{i}",
                    "-p",
                    f"127.0.0.1:{port}:80",
                    "latest",
                    "sh",
                    "-c",
                    "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www",
                ],
                check=True,
                capture_output=True,
            )
            wait_answer(f"http://127.0.0.1:{port}/")
            starts.append(time.perf_counter() - t0)
            subprocess.run([*imgtool, "rm", "-f", f"bench{i}"], check=True, capture_output=True)
        port = free_port()
        subprocess.run(
            [
                *imgtool,
                "run",
                "-d",
                "--name",
                "benchbig",
                "-p",
                f"127.0.0.1:{port}:80",
                "latest",
                "sh",
                "-c",
                script,
            ],
            check=True,
            capture_output=True,
        )
        wait_answer(f"http://127.0.0.1:{port}/", timeout=60)
        for _ in range(args.runs):
            rates.append(throughput(f"http://127.0.0.1:{port}/big"))
        subprocess.run([*imgtool, "rm", "-f", "benchbig"], check=True, capture_output=True)
        www = work / "www"
        www.mkdir()
        with open(www / "big", "wb") as f:
            f.truncate(args.mib << 20)
        (www / "index.html").write_text("ok\n")
        hport = free_port()
        host = subprocess.Popen(
            ["busybox", "httpd", "-f", "-p", f"127.0.0.1:{hport}", "-h", str(www)]
        )
        try:
            wait_answer(f"http://127.0.0.1:{hport}/")
            limit = [throughput(f"http://127.0.0.1:{hport}/big") for _ in range(args.runs)]
        finally:
            host.terminate()
            host.wait()
        subprocess.run([*imgtool, "network", "rm"], capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(rates), statistics.median(limit)
    print(f"median of {args.runs} runs:")
    print(f"  run -d -p … until the container answers   {statistics.median(starts) * 1000:7.0f} ms")
    print(f"  throughput through the published port     {a:7.0f} MB/s")
    print(f"  same server on the host's loopback        {b:7.0f} MB/s  (ratio {a / b:.2f})")


if __name__ == "__main__":
    main()
