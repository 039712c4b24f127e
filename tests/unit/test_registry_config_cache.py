"""registries.conf, parsed once and kept in the user's cache: used only for exactly the files
it was made from, and only when no one but our user can have written it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgtool.registry import config as regconf

CONF = """
[aliases]
"app" = "quay.io/team/app"

[[registry]]
location = "docker.io"
mirror = [{ location = "127.0.0.1:5000/hub", insecure = true, pull-from-mirror = "tag-only" }]
"""


@pytest.fixture
def conf_file(tmp_path: Path) -> Path:
    p = tmp_path / "registries.conf"
    p.write_text(CONF)
    (tmp_path / "registries.conf.d").mkdir()
    (tmp_path / "registries.conf.d" / "10-x.conf").write_text(
        '[[registry]]\nlocation = "b.example"\nblocked = true\n'
    )
    return p


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the parses of the files from here on."""
    calls: list[int] = []
    parse = regconf._parse

    def counted(files: list[Path]) -> regconf.RegistriesConf:
        calls.append(len(files))
        return parse(files)

    monkeypatch.setattr(regconf, "_parse", counted)
    return calls


def test_the_cache_gives_back_what_the_files_say(
    conf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = _parses(monkeypatch)
    first = regconf.load([conf_file])
    again = regconf.load([conf_file])
    assert parses == [2]  # the second load came from the cache
    assert again == first
    assert again.aliases == {"app": "quay.io/team/app"}
    blocked = again.entry_for("b.example/x")
    assert blocked is not None and blocked.blocked


def test_a_changed_added_or_removed_file_is_read_again(
    conf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = _parses(monkeypatch)
    regconf.load([conf_file])
    conf_file.write_text(CONF.replace("quay.io/team/app", "quay.io/team/other"))
    assert regconf.load([conf_file]).aliases == {"app": "quay.io/team/other"}
    dropin = conf_file.parent / "registries.conf.d" / "20-y.conf"
    dropin.write_text('[aliases]\n"more" = "quay.io/more"\n')
    assert regconf.load([conf_file]).aliases["more"] == "quay.io/more"
    dropin.unlink()
    assert "more" not in regconf.load([conf_file]).aliases
    assert parses == [2, 2, 3, 2]


def test_a_cache_others_could_write_or_a_damaged_one_is_not_used(
    conf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = _parses(monkeypatch)
    regconf.load([conf_file])
    cache_dir = regconf.cache_dir()
    assert cache_dir is not None
    cached = Path(cache_dir, regconf.CACHE_FILE)
    doc = json.loads(cached.read_text())
    doc["aliases"]["app"] = "evil.example/app"  # what a writer other than us might put there
    cached.write_text(json.dumps(doc))
    os.chmod(cached, 0o666)
    assert regconf.load([conf_file]).aliases["app"] == "quay.io/team/app"
    os.chmod(cached, 0o600)
    os.chmod(cache_dir, 0o777)
    assert regconf.load([conf_file]).aliases["app"] == "quay.io/team/app"
    os.chmod(cache_dir, 0o700)
    cached.write_text('{"files": [], "registries": 3}')
    assert regconf.load([conf_file]).aliases["app"] == "quay.io/team/app"
    assert parses == [2, 2, 2, 2]


def test_a_cached_load_imports_no_toml_parser(conf_file: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom imgtool.registry import config\n"
        f"conf = config.load([Path({str(conf_file)!r})])\n"
        "print(conf.aliases['app'], 'tomllib' in sys.modules)"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs == [["quay.io/team/app", "True"], ["quay.io/team/app", "False"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="a directory of another user needs root")
def test_root_never_writes_the_cache_through_another_users_links(
    conf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root run with another user's HOME (su without -, sudo -E): that user's links at the
    temporary file's name must not make root write elsewhere, and no cache is kept there."""
    home = tmp_path / "alice"
    cache = home / ".cache" / "imgtool"
    cache.mkdir(parents=True)
    for d in (home, home / ".cache", cache):
        os.chown(d, 65534, 65534)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    os.symlink(victim, cache / f".{regconf.CACHE_FILE}.{os.getpid()}.tmp")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert regconf.load([conf_file]).aliases == {"app": "quay.io/team/app"}
    assert victim.read_text() == "root's file\n"
    assert sorted(os.listdir(cache)) == [f".{regconf.CACHE_FILE}.{os.getpid()}.tmp"]
