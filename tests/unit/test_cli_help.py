"""`imgtool --help`, `-h` and a bare `imgtool` laid out without click (cli/helptext.py): always
compared with what click itself prints, byte for byte, at every width click can pick."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

import click
import pytest

from imgtool.cli import SUMMARIES, fast
from imgtool.cli.helptext import group_help, help_width, shortened
from tests.unit.test_cli_fast import _cli_run


@functools.cache
def _clicks_pages() -> dict[int, str]:
    """click's own page at each width, from a fresh interpreter as `imgtool --help` runs: in
    this one, a test that made a bare click.Context(cli) has left click's cached help option
    without -h (click 8.2+ keeps the first one it made)."""
    code = (
        "import json, click\n"
        "from imgtool.cli import cli\n"
        "pages = {}\n"
        "for width in range(10, 201):\n"
        "    ctx = click.Context(\n"
        "        cli, info_name='imgtool', terminal_width=width, **cli.context_settings\n"
        "    )\n"
        "    pages[width] = cli.get_help(ctx)\n"
        "print(json.dumps(pages))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return {int(width): page for width, page in json.loads(done.stdout).items()}


def clicks_page(width: int) -> str:
    return _clicks_pages()[width]


@pytest.mark.parametrize("width", range(50, 79))  # every width click picks: min(cols, 80) - 2 >= 50
def test_the_page_is_clicks_at_every_width_click_uses(width: int) -> None:
    page = group_help(width)
    assert page is not None, width  # laid out here, not left to click
    assert page == clicks_page(width)


@pytest.mark.parametrize("width", [*range(10, 50), *range(79, 201, 7)])
def test_other_widths_are_clicks_or_left_to_click(width: int) -> None:
    page = group_help(width)
    assert page is None or page == clicks_page(width)


@pytest.mark.parametrize("columns", [None, "", "junk", "0", "-5", *map(str, range(20, 201, 9))])
def test_the_width_is_the_one_click_picks(
    columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert help_width() == click.HelpFormatter().width


@pytest.mark.parametrize("columns", [0, 30, 72, 81, 150])
def test_the_width_of_a_terminal_is_the_one_click_picks(
    columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No COLUMNS: the terminal on stdout decides (0 columns: 80, as shutil says)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    controller, terminal = os.openpty()
    try:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        with open(terminal, "w", closefd=False) as stdout:
            monkeypatch.setattr(sys, "__stdout__", stdout)
            assert help_width() == click.HelpFormatter().width
    finally:
        os.close(controller)
        os.close(terminal)


@pytest.mark.parametrize("limit", range(-2, 120))
def test_summaries_are_shortened_as_click_shortens_them(limit: int) -> None:
    from click.utils import _make_default_short_help

    for text in [*SUMMARIES.values(), "a-very-long-hyphenated-word then more words"]:
        assert shortened(text, limit) == _make_default_short_help(text, limit), (text, limit)


@pytest.mark.parametrize("columns", [None, "20", "64", "79", "200"])
@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]], ids=repr)
def test_help_prints_and_exits_as_click_does(
    argv: list[str], columns: str | None, tmp_path: Path
) -> None:
    env = {} if columns is None else {"COLUMNS": columns}
    lean = _cli_run("lean", argv, tmp_path, env)
    under_click = _cli_run("click", argv, tmp_path, env)
    assert lean[:3] == under_click[:3]
    assert lean[0] == (2 if not argv else 0)
    assert "Commands:" in (lean[2] if not argv else lean[1])
    assert not lean[3] and under_click[3]  # the lean path was taken, and click's was click's


def test_only_the_groups_own_help_is_laid_out_here() -> None:
    assert fast.parse(["--help"]) is not None
    for argv in (["--help", "x"], ["-h", "-h"], ["--root", "/x", "--help"], ["run", "--help"]):
        assert fast.parse(argv) is None, argv


def test_help_loads_neither_click_nor_the_store(tmp_path: Path) -> None:
    from tests.unit.test_cli_startup import loaded_after

    code = (
        "import sys\nsys.argv = ['imgtool', '--help']\nfrom imgtool.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    mods = loaded_after(code, tmp_path)
    assert "imgtool.cli.helptext" in mods  # it did run
    assert not {"click", "imgtool.store", "imgtool.cli.actions", "textwrap"} & mods


def test_a_reader_that_went_away_ends_help_as_under_click() -> None:
    """`imgtool --help | head -1` once head has gone: status 1, nothing on stderr."""
    results = []
    for entry in ("main()", "cli(prog_name='imgtool')"):
        code = (
            "import sys\nsys.argv = ['imgtool', '--help']\n"
            f"from imgtool.cli import {entry.partition('(')[0]}\n{entry}\n"
        )
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            r = subprocess.run(
                [sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE, timeout=60
            )
        finally:
            os.close(write_end)
        results.append((r.returncode, r.stderr))
    assert results[0] == results[1] == (1, b"")
