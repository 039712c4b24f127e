"""A real distribution: a `debootstrap --variant=minbase` Debian root as a three-layer image
(cached outside the repository). Unpacked as umoci unpacks it, and run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import imgtool
from tests.e2e.test_unpack_peers import _diff, tree

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("debootstrap"), reason="debootstrap is not installed"),
]


@pytest.mark.skipif(not shutil.which("umoci"), reason="umoci is not installed")
def test_debian_tree_equals_umoci(debian: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{debian}:latest", str(bundle)],
        check=True,
        capture_output=True,
    )
    mine = tmp_path / "mine"
    r = imgtool("--root", str(debian), "unpack", "latest", str(mine))
    assert r.code == 0, r.err
    theirs = tree(bundle / "rootfs")
    assert len(theirs) > 5000
    assert _diff(tree(mine), theirs) == []
    assert not (mine / "usr/share/doc").exists()


def test_debian_runs(debian: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(debian, root)
    r = imgtool(
        "--root",
        str(root),
        "run",
        "--rm",
        "latest",
        "bash",
        "-c",
        "cat /etc/debian_version; dpkg-query -W | wc -l; cat /etc/motd; /opt/app/run.sh;"
        " id -un; ls /usr/share/doc 2>&1 | head -1",
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0][:2].isdigit()
    assert int(lines[1]) > 50
    assert lines[2:5] == ["built for imgtool's tests", "app", "root"]
    assert "No such file" in lines[5]
    r = imgtool("--root", str(root), "run", "--rm", "-u", "nobody", "latest", "id")
    assert r.out.startswith("uid=65534(nobody) gid=65534(nogroup)")
    r = imgtool("--root", str(root), "run", "--rm", "-u", "www-data:www-data", "latest", "id", "-g")
    assert r.out.strip() == "33"
