"""The one table renderer the commands share (cli/table.py): pure, no click."""

from __future__ import annotations

from imgtool.cli.table import table_lines


def test_columns_as_wide_as_their_widest_cell_and_no_trailing_blanks() -> None:
    rows = [("NAME", "SIZE", "NOTE"), ("a", "1.5 MB", ""), ("longer", "12 B", "x")]
    assert table_lines(rows, right={1}) == [
        "NAME      SIZE  NOTE",
        "a       1.5 MB",
        "longer    12 B  x",
    ]


def test_left_aligned_unless_named() -> None:
    assert table_lines([("#", "ID"), ("10", "ab")]) == ["#   ID", "10  ab"]


def test_no_rows_no_lines() -> None:
    assert table_lines([]) == []


def test_loads_no_click() -> None:
    import subprocess
    import sys

    code = "import sys, imgtool.cli.table; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
