"""What `imgtool run --rm IMAGE true` and a re-pull import from start to end (issue 13).

After the first run has unpacked the layers and compiled the seccomp filter, a run loads
neither dataclasses (inspect, ast, dis), typing, OpenSSL, click, pathlib nor the layer applier,
the seccomp compiler or the bridge's modules; a re-pull of an image the store has loads none of
ssl, http.client, requests, pathlib, the TOML parser (registries.conf comes from the cache) or
the unpacking code (its layers are unpacked). Checked by the modules loaded, never by timing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.gates import CONTAINERS
from tests.support.registry import Registry
from tests.unit.test_import_cost import HEAVY, PATHLIB, modules_of

LAZY = {
    "imgtool.sandbox.seccomp",  # the compiler: the cached program is read instead
    "imgtool.layer.apply",  # the layers were unpacked by the first run
    "imgtool.compression",
    "imgtool.network.links",  # --network none
    "imgtool.registry.config",  # the image is found by the name as given
    "select",  # the child polls its life pipe with a non-blocking read
    "termios",  # no terminal (-t)
    "math",  # no --cpus
}


@CONTAINERS[0]
@CONTAINERS[1]
def test_second_run_loads_nothing_heavy(images: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(images["busybox"], root)  # a layout is a store; `latest` names its image
    argv = ["run", "--rm", "--network", "none", "latest", "true"]
    first, _ = modules_of(argv, root, tmp_path)
    assert first == 0
    status, mods = modules_of(argv, root, tmp_path)
    assert status == 0
    assert "imgtool.sandbox.linux" in mods  # it did make a container
    assert not (HEAVY | PATHLIB) & mods, (HEAVY | PATHLIB) & mods
    assert not LAZY & mods, LAZY & mods
    assert not list((root / "containers").iterdir())  # --rm: nothing left


@pytest.mark.registry
def test_repull_loads_no_tls_http_or_toml_library(plain_registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "registries.conf").write_text('[aliases]\n"someapp" = "quay.io/team/app"\n')
    ref = f"{plain_registry.host}/library/busybox:latest"
    root = tmp_path / "store"
    first, _ = modules_of(["pull", "-q", ref], root, tmp_path)
    assert first == 0
    status, mods = modules_of(["pull", "-q", ref], root, tmp_path)
    assert status == 0
    assert "imgtool.registry.quickhead" in mods  # it did ask the registry
    heavy = HEAVY | PATHLIB | {"ssl", "http.client", "socket", "tomllib", "concurrent.futures"}
    heavy |= {"threading", "imgtool.layer.unpacked", "imgtool.layer.apply"}
    assert not heavy & mods, heavy & mods
