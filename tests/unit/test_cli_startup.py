"""Start-up cost (issue 13): each command imports only what it uses. Checked by the modules a
fresh interpreter has loaded, never by timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from imgtool.cli import COMMANDS, SUMMARIES, cli
from tests.unit.test_import_cost import store_with_one_image


def loaded_after(code: str, tmp_path: Path) -> set[str]:
    """The imgtool and stdlib modules a fresh interpreter holds after running `code`."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {"IMGTOOL_ROOT": str(tmp_path / "store"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def run_cli(args: list[str]) -> str:
    return (
        "from imgtool.cli import cli\n"
        f"try:\n    cli.main({args!r}, prog_name='imgtool')\n"
        "except SystemExit:\n    pass\n"
    )


def test_summaries_are_the_commands_own_help() -> None:
    assert set(SUMMARIES) == set(COMMANDS)
    ctx = click.Context(cli)
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        assert SUMMARIES[name] == cmd.get_short_help_str(10**6), name


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    mods = loaded_after(run_cli(["--help"]), tmp_path)
    command_modules = {f"imgtool.cli.{m}" for m in COMMANDS.values()}
    assert not command_modules & mods


def test_images_skips_registries_conf_and_http(tmp_path: Path) -> None:
    mods = loaded_after(run_cli(["images"]), tmp_path)
    assert "imgtool.cli.images" in mods  # it did run
    assert "imgtool.registry.config" not in mods
    assert "requests" not in mods


def test_short_names_still_follow_registries_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text('[aliases]\n"myalias" = "quay.io/some/thing"\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    from imgtool.cli.common import resolve_name

    assert str(resolve_name("myalias")) == "quay.io/some/thing:latest"


@pytest.mark.parametrize("width", [40, 60, 80, 200])
def test_help_lists_commands_as_click_would(width: int) -> None:
    """The same listing click makes by importing every command, long summaries cut alike."""
    mine, clicks = click.HelpFormatter(width=width), click.HelpFormatter(width=width)
    ctx = click.Context(cli)
    cli.format_commands(ctx, mine)
    click.Group.format_commands(cli, ctx, clicks)
    assert mine.getvalue() == clicks.getvalue()


def test_pull_module_leaves_the_thread_pool_for_a_pull_with_layers(tmp_path: Path) -> None:
    mods = loaded_after("import imgtool.puller", tmp_path)
    assert "concurrent.futures" not in mods
    assert "subprocess" not in mods  # credential helpers run only for a registry that asks


def test_run_of_a_stored_image_loads_no_openssl(tmp_path: Path) -> None:
    """`run` of an image already unpacked hashes nothing: the manifest's digest is its blob's
    name, checked when it was written, and unpacked layers are found by their ChainIDs."""
    code = (
        "from pathlib import Path\n"
        "from imgtool.store import Store\n"
        "from imgtool.layer.unpacked import LayerStore\n"
        f"store = Store(Path({str(tmp_path / 's')!r}))\n"
        "img = store.image('one')\n"
        "assert img.digest == {d.ref_name: d.digest for d in store.entries()}['one']\n"
    )
    store_with_one_image(tmp_path / "s")
    mods = loaded_after(code, tmp_path)
    assert "imgtool.layer.unpacked" in mods
    assert "hashlib" not in mods and "_hashlib" not in mods


def test_cgroups_loads_no_containerfile_parser(tmp_path: Path) -> None:
    """`run` imports cgroups; only a -m value needs the size syntax it shares with the builder."""
    assert "imgtool.containerfile" not in loaded_after("import imgtool.sandbox.cgroups", tmp_path)
    mods = loaded_after("import imgtool.sandbox.cgroups as c\nc.parse_memory('64m')", tmp_path)
    assert "imgtool.containerfile.values" in mods


def test_chain_ids_are_the_oci_chain_ids() -> None:
    import hashlib

    from imgtool.layer.unpacked import chain_ids

    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    below = hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, f"sha256:{below}"]
