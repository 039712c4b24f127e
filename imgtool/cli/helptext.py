"""`imgtool --help` without click (whose imports cost about 50 ms, most of that command's
time): the group's help page as click's HelpFormatter lays it out, byte for byte, at the
width click would pick. Only plain text is laid out here (single spaces, no hyphen in a line
that must wrap, no word longer than its line): for anything else the page is None and click
renders it. tests/unit/test_cli_help.py compares the two at every terminal width."""

from __future__ import annotations

import os
import sys

from imgtool.cli import SUMMARIES

# the group's own texts, shared with the click group of cli/group.py
GROUP_HELP = "A daemonless OCI image builder, layer manager and runner."
ROOT_HELP = "The store (an OCI image layout). Default /var/lib/imgtool as root."
DEBUG_HELP = "On failure print the traceback; log HTTP exchanges (redacted) to stderr."

# the rows of click's Options section: click's own --version and -h/--help texts, and the
# group's options in their declaration order (--root's metavar is click.Path's DIRECTORY)
_OPTION_ROWS = (
    ("--version", "Show the version and exit."),
    ("--root DIRECTORY", ROOT_HELP),
    ("--debug", DEBUG_HELP),
    ("-h, --help", "Show this message and exit."),
)
_USAGE = "[OPTIONS] COMMAND [ARGS]..."
_INDENT = 2  # click's indent_increment
_COL_MAX, _COL_SPACING = 30, 2  # HelpFormatter.write_dl's defaults


class _Unsupported(Exception):
    """Text whose wrapping only textwrap's full rules decide: click's to render."""


def help_width() -> int:
    """The width of click's HelpFormatter: the terminal's columns as
    shutil.get_terminal_size reads them (COLUMNS first, then the terminal on stdout, else 80),
    at most 80, minus 2, and never under 50."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, 80) - 2, 50)


def group_help(width: int) -> str | None:
    """The group's help page as click's `imgtool --help` prints it (without the final newline
    echo adds), or None when click must lay it out."""
    prefix = "Usage: imgtool "
    if width < len(prefix) + 20:
        return None  # click puts the usage on a line of its own
    try:
        page = [_wrapped(_USAGE, width, prefix, " " * len(prefix)), ""]
        indent = " " * _INDENT
        page += [_wrapped(GROUP_HELP, width, indent, indent), "", "Options:"]
        page += _definitions(_OPTION_ROWS, width)
        names = sorted(SUMMARIES)
        limit = width - 6 - max(map(len, names))  # click: "3 times the default spacing"
        page += ["", "Commands:"]
        page += _definitions([(n, shortened(SUMMARIES[n], limit)) for n in names], width)
    except _Unsupported:
        return None
    return "\n".join(page)


def shortened(text: str, limit: int) -> str:
    """A command's help as click's listing shortens it (textwrap.shorten with "..." and no
    break at hyphens, without importing textwrap): the most whole words that leave room for
    "...", within `limit`."""
    words = text.split()
    joined = " ".join(words)
    if len(joined) <= limit:
        return joined
    kept = 0
    length = -1  # no space before the first word
    for word in words:
        if length + 1 + len(word) + 3 > limit:
            break
        length += 1 + len(word)
        kept += 1
    return " ".join(words[:kept]) + "..."


def _definitions(
    rows: tuple[tuple[str, str], ...] | list[tuple[str, str]], width: int
) -> list[str]:
    """HelpFormatter.write_dl at one indent level: terms, then their texts wrapped in a column."""
    first_col = min(max(len(term) for term, _ in rows), _COL_MAX) + _COL_SPACING
    text_width = max(width - first_col - 2, 10)
    hanging = " " * (first_col + _INDENT)
    lines = []
    for term, text in rows:
        if len(term) > first_col - _COL_SPACING:
            raise _Unsupported  # click puts the text on a line of its own
        wrapped = _wrapped(text, text_width, "", "").split("\n")
        lines.append(" " * _INDENT + term.ljust(first_col) + wrapped[0])
        lines += [hanging + line for line in wrapped[1:]]
    return lines


def _wrapped(text: str, width: int, first: str, rest: str) -> str:
    """click's wrap_text of one paragraph of plain words: textwrap's greedy fill."""
    if not text or " ".join(text.split()) != text or not (text.isascii() and text.isprintable()):
        raise _Unsupported  # tabs, runs of spaces, escapes, several paragraphs
    if len(first) + len(text) <= width:
        return first + text
    if "-" in text:
        raise _Unsupported  # textwrap may break a line after a hyphen
    lines: list[str] = []
    line = ""  # the words of the line being filled
    for word in text.split(" "):
        indent = rest if lines else first
        candidate = f"{line} {word}" if line else word
        if len(indent) + len(candidate) <= width:
            line = candidate
            continue
        if not line or len(rest) + len(word) > width:
            raise _Unsupported  # textwrap cuts a word longer than the line
        lines.append(indent + line)
        line = word
    lines.append((rest if lines else first) + line)
    return "\n".join(lines)
