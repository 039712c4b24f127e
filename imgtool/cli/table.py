"""Columns of text as `docker images` and `ps` print them: each as wide as its widest cell,
two spaces between, no trailing blanks. No click here: the fast commands (cli/fast.py) print
tables without importing it."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def table_lines(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> list[str]:
    """`rows` (the header first) as aligned lines; the columns numbered in `right` are
    right-aligned (numbers and sizes), the others left-aligned."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
