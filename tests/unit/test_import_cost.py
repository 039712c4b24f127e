"""What the commands a user runs most import, as the console script starts them (issue 13):
no dataclasses (it imports inspect, ast, dis and tokenize), no typing, no OpenSSL where nothing
is hashed, and neither click, requests, http.client nor ssl where the command does not need
them; nor pathlib (with urllib.parse, ipaddress and fnmatch): the store, the container records,
cgroups and registries.conf work on strings. Checked by the modules a fresh interpreter holds,
never by timing; a container's own run and a re-pull are checked in
tests/e2e/test_hot_path_imports.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.store import Store

# what no command below may load
HEAVY = {"dataclasses", "inspect", "typing", "click", "requests", "hashlib", "_hashlib"}
# pathlib and what it imports: what run, a re-pull and images do without
PATHLIB = {"pathlib", "urllib.parse", "ipaddress", "fnmatch", "ntpath"}
# An editable install's import finder (the test environment's) imports pathlib at start-up; a
# user's `pip install .` does not. Forgotten before imgtool starts, so that its imports show.
FORGET_START_UP = (
    f"import sys\nfor _name in {sorted(PATHLIB)!r}:\n    sys.modules.pop(_name, None)\n"
)


def modules_of(argv: list[str], root: Path, home: Path) -> tuple[int, set[str]]:
    """(exit status, modules loaded) of `imgtool ARGV` run by the console script's entry."""
    code = (
        FORGET_START_UP + f"sys.argv = ['imgtool', *{argv!r}]\n"
        "from imgtool.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    status = e.code\nelse:\n    status = 0\n"
        "import json\n"
        "print(json.dumps([status, sorted(sys.modules)]), file=sys.stderr)\n"
    )
    env = {"IMGTOOL_ROOT": str(root), "HOME": str(home), "PATH": "/usr/bin:/bin"}
    env["CONTAINERS_REGISTRIES_CONF"] = str(home / "registries.conf")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    status, modules = json.loads(proc.stderr.strip().splitlines()[-1])
    return status, set(modules)


def store_with_one_image(root: Path) -> Store:
    """A store holding one small image, named `one` (no layers: nothing to unpack)."""
    store = Store(root).init()
    cfg = store.write_blob(
        b'{"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05Z",'
        b'"config":{"Cmd":["true"]},"rootfs":{"type":"layers","diff_ids":[]}}'
    )
    raw = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg, "size": store.blob_size(cfg)},
            "layers": [],
        }
    )
    store.set_ref("one", oci.Descriptor(mt.OCI_MANIFEST, store.write_blob(raw), len(raw)))
    return store


@pytest.fixture
def one_image(tmp_path: Path) -> Path:
    return store_with_one_image(tmp_path / "store").root


def test_images_loads_nothing_heavy(one_image: Path, tmp_path: Path) -> None:
    status, mods = modules_of(["images"], one_image, tmp_path)
    assert status == 0
    assert "imgtool.inspect" in mods  # it did list
    assert not (HEAVY | PATHLIB) & mods, (HEAVY | PATHLIB) & mods


def test_json_images_loads_nothing_heavy(one_image: Path, tmp_path: Path) -> None:
    status, mods = modules_of(["images", "--json", "--digests"], one_image, tmp_path)
    assert status == 0
    assert not (HEAVY | PATHLIB) & mods, (HEAVY | PATHLIB) & mods


def test_run_loads_nothing_heavy_up_to_its_checks(one_image: Path, tmp_path: Path) -> None:
    """Every module `run` imports at the top is loaded before the image is looked up; a bad
    option stops it there (125) with nothing made."""
    argv = ["run", "--rm", "--network", "none", "--cap-add", "NOSUCH", "one", "true"]
    status, mods = modules_of(argv, one_image, tmp_path)
    assert status == 125
    assert {"imgtool.runner", "imgtool.sandbox.runner", "imgtool.sandbox.seccomp_cache"} <= mods
    assert not (HEAVY | PATHLIB) & mods, (HEAVY | PATHLIB) & mods
    # the seccomp compiler, the layer applier and the network come only when needed
    for lazy in ("imgtool.sandbox.seccomp", "imgtool.layer.apply", "imgtool.network.links"):
        assert lazy not in mods
    assert not (one_image / "containers").exists()


def test_repull_path_modules_load_no_tls_or_http_library(tmp_path: Path) -> None:
    """What a re-pull's quick HEAD stands on: the puller and quickhead import neither ssl
    nor http.client (plain HTTP needs neither), nor the layer code, the client or pathlib."""
    code = (
        FORGET_START_UP + "import json\n"
        "import imgtool.cli.actions, imgtool.puller, imgtool.registry.quickhead\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    mods = set(json.loads(out))
    for name in ("ssl", "http.client", "socket", "imgtool.layer.unpacked", "concurrent.futures"):
        assert name not in mods, name
    assert not (HEAVY | PATHLIB) & mods, (HEAVY | PATHLIB) & mods
