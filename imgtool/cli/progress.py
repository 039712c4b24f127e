"""Rendering progress events: live per-layer lines on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time

from imgtool.cli.common import echo, human_size
from imgtool.progress import Event

_LABELS = {"exists": "Already exists", "done": "Complete", "mounted": "Mounted"}


class Renderer:
    def __init__(self, verb: str, quiet: bool = False) -> None:
        self.verb = verb
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.lines: dict[str, str] = {}
        self.order: list[str] = []
        self.started: dict[str, tuple[float, int]] = {}
        self.drawn = 0
        self.last_draw = 0.0
        self.lock = threading.Lock()

    def __call__(self, ev: Event) -> None:
        if self.quiet:
            return
        with self.lock:
            if ev.kind == "info":
                self._print(ev.message)
                return
            if ev.kind == "pushed":
                return
            if ev.item not in self.lines:
                self.order.append(ev.item)
            if ev.kind == "start":
                self.started[ev.item] = (time.monotonic(), ev.current)
            self.lines[ev.item] = self._describe(ev)
            if self.tty:
                now = time.monotonic()
                if ev.kind != "bytes" or now - self.last_draw > 0.1:
                    self._draw()
                    self.last_draw = now
            elif ev.kind in ("exists", "done", "mounted"):
                echo(f"{ev.item}: {self.lines[ev.item]}", err=True)

    def _describe(self, ev: Event) -> str:
        if ev.kind in _LABELS:
            return f"{_LABELS[ev.kind]} {human_size(ev.total)} {ev.message}".rstrip()
        verb = self.verb
        if ev.kind == "start":
            return f"{verb} 0B/{human_size(ev.total)}"
        t0, start = self.started.get(ev.item, (time.monotonic(), 0))
        elapsed = max(time.monotonic() - t0, 1e-6)
        speed = (ev.current - start) / elapsed
        return f"{verb} {human_size(ev.current)}/{human_size(ev.total)} {human_size(speed)}/s"

    def _draw(self) -> None:
        out = sys.stderr
        if self.drawn:
            out.write(f"\x1b[{self.drawn}F")
        for item in self.order:
            out.write(f"\x1b[2K{item}: {self.lines[item]}\n")
        self.drawn = len(self.order)
        out.flush()

    def _print(self, text: str) -> None:
        if self.tty and self.drawn:
            self.drawn = 0
        echo(text, err=True)
