"""`ps` and `images` print their tables through cli/table.py: the exact bytes, pinned."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import imgtool.inspect
from imgtool.cli import cli
from imgtool.containers import Containers, Record
from imgtool.inspect import ImageRow

HOUR = 3600.0
BUSYBOX = "docker.io/library/busybox:latest"


def invoke(tmp_path: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "store"), *args])
    assert result.exit_code == 0, result.output
    return result.output


def record(cid: str, name: str, command: list[str], age: float, exit_code: int | None) -> Record:
    status = "exited" if exit_code is not None else "created"
    created = time.time() - age
    return Record(
        cid, name, BUSYBOX, "sha256:" + "0" * 64, command, created, status, exit_code=exit_code
    )


def test_ps_all_columns_padded_to_the_widest_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Containers, "reap_stale", lambda self: [])  # the host's cgroups: not ours
    containers = Containers(tmp_path / "store")
    long_command = ["sh", "-c", "echo a long command that gets cut"]
    for rec in (
        record("a" * 64, "web", ["true"], 2 * HOUR + 5, 0),
        record("b" * 64, "a-much-longer-name", long_command, 3 * 86400.0 + 5, 137),
    ):
        containers.dir(rec.id).mkdir(parents=True)
        containers.save(rec)
    assert invoke(tmp_path, "ps", "-a") == (
        "CONTAINER ID  IMAGE                             COMMAND                         "
        "CREATED      STATUS        NAMES\n"
        "aaaaaaaaaaaa  docker.io/library/busybox:latest  true                            "
        "2 hours ago  Exited (0)    web\n"
        "bbbbbbbbbbbb  docker.io/library/busybox:latest  sh -c echo a long command t...  "
        "3 days ago   Exited (137)  a-much-longer-name\n"
    )
    only_running = "CONTAINER ID  IMAGE  COMMAND  CREATED  STATUS  NAMES\n"
    assert invoke(tmp_path, "ps") == only_running  # none: the header alone


def test_images_table_with_short_and_full_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two, three = ("sha256:" + c * 64 for c in "123")
    rows = [
        ImageRow(BUSYBOX, one, "m", two, None, 2_200_000, ("linux/amd64",)),
        ImageRow("<none>", three, "m", "", None, 512, ()),
    ]
    monkeypatch.setattr(imgtool.inspect, "list_images", lambda store: rows)
    assert invoke(tmp_path, "images") == (
        "NAME                              DIGEST        IMAGE ID      CREATED  SIZE\n"
        "docker.io/library/busybox:latest  111111111111  222222222222  -        2.2MB\n"
        "<none>                            333333333333  -             -        512B\n"
    )
    full = invoke(tmp_path, "images", "--digests").splitlines()
    assert full[1].split("  ")[1] == one
    assert full[0].startswith("NAME" + " " * 30 + "DIGEST" + " " * (71 - 6 + 2) + "IMAGE ID")
    assert [line == line.rstrip() for line in full] == [True, True, True]
