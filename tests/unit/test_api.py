"""The Python API's surface and argument checking: fast, no root, no registry. A bad argument
is the library's error, raised before anything is created."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import imgtool
from imgtool import api
from imgtool.errors import ImgtoolError, InvalidArgument, InvalidPlatform
from imgtool.store import Store


def loaded_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_imgtool_loads_no_engine() -> None:
    mods = loaded_after("import imgtool")
    assert not {m for m in mods if m.startswith("imgtool.")}, mods
    assert "requests" not in mods and "click" not in mods


def test_a_name_loads_its_module_on_first_use() -> None:
    mods = loaded_after("import imgtool\nimgtool.images")
    assert "imgtool.api" in mods
    assert "imgtool.puller" not in mods and "requests" not in mods  # the verbs import lazily


def test_every_exported_name_resolves() -> None:
    assert set(imgtool._ELSEWHERE) <= set(imgtool.__all__)
    for name in imgtool.__all__:
        assert getattr(imgtool, name) is not None, name
    assert imgtool.pull is api.pull and imgtool.Store is Store
    assert set(dir(imgtool)) >= set(imgtool.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        imgtool.nope  # noqa: B018
    with pytest.raises(AttributeError, match="InvalidArgument"):
        imgtool.InvalidArgument  # noqa: B018  (a name in imgtool.api, but not a public one)


def test_submodule_imports_do_not_shadow_the_verbs() -> None:
    """Importing imgtool.puller, imgtool.runner, ... sets package attributes of their names:
    none may be a verb's."""
    import imgtool.analyze
    import imgtool.builder
    import imgtool.inspect
    import imgtool.puller
    import imgtool.pusher
    import imgtool.runner  # noqa: F401

    for verb in ("pull", "push", "build", "run", "layers", "check", "images", "tag", "rmi"):
        assert callable(getattr(imgtool, verb)) and getattr(imgtool, verb).__module__ == (
            "imgtool.api"
        ), verb


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "never-made"


def test_pull_with_a_bad_platform_creates_nothing(root: Path) -> None:
    with pytest.raises(InvalidPlatform, match="'linux'"):
        imgtool.pull(Store(root), "localhost:1/x", platform="linux")
    assert not root.exists()


def test_pull_platform_and_all_platforms_are_exclusive(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="platform"):
        imgtool.pull(Store(root), "localhost:1/x", platform="linux/amd64", all_platforms=True)
    assert not root.exists()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"memory": "lots"}, "memory"),
        ({"memory": "1k"}, "memory"),  # below docker's minimum of 6m
        ({"memory": -5}, "memory"),
        ({"cpus": "many"}, "cpus"),
        ({"cpus": float("inf")}, "cpus"),
        ({"network": "wifi"}, "network"),
    ],
)
def test_run_refuses_bad_values_before_anything_exists(root: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        imgtool.run(Store(root), "busybox", ["true"], **kwargs)
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}: ") and "\n" not in str(info.value)
    assert not root.exists()


def test_build_refuses_a_missing_context_and_a_bad_compression(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="context"):
        imgtool.build(Store(root), tmp_path / "nowhere")
    with pytest.raises(InvalidArgument, match="compression"):
        imgtool.build(Store(root), tmp_path, compression="lzma")  # type: ignore[arg-type]
    assert not root.exists()


def test_limits_parse_as_docker_does() -> None:
    from imgtool.runner import parse_limits

    limits = parse_limits("64m", "0.5", 10)
    assert (limits.memory, limits.cpus, limits.pids) == (64 << 20, 0.5, 10)
    assert parse_limits(None, None, None) == parse_limits("0", "0", 0)  # 0: no limit


def test_errors_are_one_tree() -> None:
    assert issubclass(InvalidArgument, ImgtoolError)
    assert imgtool.ImgtoolError is ImgtoolError


def test_rules_file_errors_are_config_errors(tmp_path: Path) -> None:
    from imgtool.analyze import load_rules, parse_size
    from imgtool.errors import ConfigError

    bad = tmp_path / ".imgtool.toml"
    bad.write_text("[check]\nmax-sise = 1\n")
    with pytest.raises(ConfigError, match="max-sise"):
        load_rules(bad)
    with pytest.raises(InvalidArgument, match="invalid size 'lots'"):
        parse_size("lots")
