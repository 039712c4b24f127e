"""`layers`, `diff` and `check` on images whose sizes and waste are known exactly, from every
kind of source: the store, a registry (--remote), an OCI layout and both docker-archive forms."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool.errors import ImgtoolError
from imgtool.filetree import Entry, LayerTree, analyze, glob_match
from tests.conftest import imgtool, seed
from tests.support.registry import Registry

# the sized image (fixtures/make_images.py sized_layers): file bytes per layer
LAYER_BYTES = [1000 + 2000 + 3000 + 4000 + 500 + 10, 1500 + 500, 100]
RECLAIMABLE = 1000 + 2000 + 3000 + 4000  # a overwritten, b deleted, dir/c and dir/d hidden
DIVE_WASTED = (1000 + 1500) + (2000 + 0)  # every copy of a and b, the copy that stays included
# per path the smallest copy over the sum of all copies (the whiteout of the file b counts 0)
DIVE_EFFICIENCY = (1000 + 0 + 3000 + 4000 + 500 + 10 + 500 + 100) / sum(LAYER_BYTES)


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sized")
    out = {
        "a": make_images.make_sized(base / "a"),
        "b": make_images.make_sized(base / "b", grown=True),
    }
    out["archive"] = make_images.docker_archive(out["a"], base / "a.tar")
    out["archive-oci"] = make_images.docker_archive(out["a"], base / "a-oci.tar", oci_style=True)
    return out


def _json(*args: str) -> dict:
    r = imgtool(*args, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_known_sizes_and_waste(sized: dict[str, Path]) -> None:
    d = _json("layers", f"oci:{sized['a']}")
    assert [x["index"] for x in d["layers"]] == [0, None, 1, 2]  # the ENV entry, in order
    assert d["layers"][1]["created_by"] == "ENV A=1"
    assert [x["files"] for x in d["layers"] if x["index"] is not None] == [6, 3, 2]
    w = d["wasted"]
    assert w["reclaimable_bytes"] == RECLAIMABLE
    assert w["dive_wasted_bytes"] == DIVE_WASTED
    assert w["dive_efficiency"] == pytest.approx(DIVE_EFFICIENCY, abs=1e-6)
    assert w["efficiency"] == pytest.approx(1 - RECLAIMABLE / sum(LAYER_BYTES), abs=1e-6)
    top = {(t["path"], t["size"], t["added_in"], t["removed_in"], t["how"]) for t in w["top"]}
    assert top == {
        ("a", 1000, 0, 1, "overwritten"),
        ("b", 2000, 0, 1, "deleted"),
        ("dir/c", 3000, 0, 2, "hidden"),
        ("dir/d", 4000, 0, 2, "hidden"),
    }
    text = imgtool("layers", f"oci:{sized['a']}", "--top", "2").out
    assert "/dir/d" in text and "layer 2 (hidden)" in text and "/a " not in text


def test_every_source_says_the_same(sized: dict[str, Path]) -> None:
    ref = _json("layers", f"oci:{sized['a']}")
    for src in (
        f"docker-archive:{sized['archive']}",
        f"docker-archive:{sized['archive-oci']}:sized:latest",
    ):
        d = _json("layers", src)
        assert d["wasted"] == ref["wasted"]
        assert d["uncompressed_size"] == ref["uncompressed_size"]
    r = imgtool("layers", f"docker-archive:{sized['archive']}:other:tag")
    assert r.code == 1 and "other:tag" in r.err


def test_store_and_remote(sized: dict[str, Path], plain_registry: Registry) -> None:
    seed(plain_registry, sized["a"], "sized/app:1.0")
    ref = f"{plain_registry.host}/sized/app:1.0"
    d = _json("layers", "--remote", ref)
    assert d["remote"] is True and d["uncompressed_size"] is None
    local = _json("layers", f"oci:{sized['a']}")
    assert d["compressed_size"] == local["compressed_size"]
    assert "wasted" not in d
    assert "no layer was fetched" in imgtool("layers", "--remote", ref).out
    assert imgtool("pull", "-q", ref).code == 0
    assert _json("layers", ref)["wasted"] == local["wasted"]


def test_diff_layer_by_layer_and_file_by_file(sized: dict[str, Path]) -> None:
    d = _json("diff", f"oci:{sized['a']}", f"oci:{sized['b']}")
    assert d["shared_layers"] == 3
    assert [x["index"] for x in d["layers_b"]] == [3] and d["layers_a"] == []
    changes = {(p["path"], p["change"], p["delta"]) for p in d["paths"]}
    assert changes == {("big", "added", 5000), ("a", "grown", 200)}
    assert d["paths"][0]["path"] == "big"  # sorted by size
    text = imgtool("diff", f"oci:{sized['a']}", f"oci:{sized['b']}").out
    assert "3 shared base layers" in text and "+5kB" in text


def test_check_passes_and_fails_with_exit_codes(sized: dict[str, Path], tmp_path: Path) -> None:
    a, b = f"oci:{sized['a']}", f"oci:{sized['b']}"
    r = imgtool(
        "check",
        b,
        "--max-size",
        "100kB",
        "--max-layer-size",
        "30kB",
        "--max-growth",
        "50%",
        "--baseline",
        a,
    )
    assert r.code == 0, r.out + r.err
    junit, md = tmp_path / "report.xml", tmp_path / "report.md"
    r = imgtool(
        "check",
        b,
        "--max-growth",
        "5%",
        "--baseline",
        a,
        "--min-efficiency",
        "0.9",
        "--max-wasted",
        "5kB",
        "--forbid",
        "**/.git",
        "--max-duplicate-bytes",
        "0",
        "--junit",
        str(junit),
        "--markdown",
        str(md),
    )
    assert r.code == 1
    failed = {line.split()[1].rstrip(":") for line in r.out.splitlines() if line.startswith("FAIL")}
    assert failed == {"max-growth", "min-efficiency", "max-wasted", "forbid", "max-duplicate-bytes"}
    assert "/.git" in r.out and "/dir/d (4.0kB)" in r.out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "5"
    assert "❌" in md.read_text() and "`forbid`" in md.read_text()


def test_check_reads_imgtool_toml_and_usage_errors(sized: dict[str, Path], tmp_path: Path) -> None:
    conf = tmp_path / ".imgtool.toml"
    conf.write_text('[check]\nmax-size = "10kB"\nforbid-caches = true\n')
    r = imgtool("check", f"oci:{sized['a']}", "--config", str(conf))
    assert r.code == 1 and "FAIL  max-size" in r.out and "FAIL  forbid" in r.out
    conf.write_text('[check]\nmax-sise = "10kB"\n')
    r = imgtool("check", f"oci:{sized['a']}", "--config", str(conf))
    assert r.code == 2 and "unknown [check] keys: max-sise" in r.err
    r = imgtool("check", f"oci:{sized['a']}", "--max-size", "lots")
    assert r.code == 2 and "invalid size 'lots'" in r.err
    r = imgtool("check", "not/pulled:1", "--max-size", "1MB")
    assert r.code == 2 and "not in the store" in r.err
    r = imgtool("check", f"oci:{sized['a']}", "--max-layers", "2")
    assert r.code == 1 and "3 layers (limit 2)" in r.out
    # a malformed glob would match nothing and let the gate pass: refused instead
    r = imgtool("check", f"oci:{sized['a']}", "--forbid", "etc/[a-")
    assert r.code == 2 and "'etc/[a-'" in r.err and r.out == ""


def test_many_layers_warn_before_the_overlay_limit(tmp_path: Path) -> None:
    root = make_images.make_many_layers(tmp_path / "many", 120)
    r = imgtool("check", f"oci:{root}")
    assert r.code == 0 and "WARN  max-layers: 120 layers" in r.out


def test_pure_tree_rules() -> None:
    # a directory replaced by a file loses what was below it; a whiteout of a directory too
    lower = LayerTree.from_members(
        [Entry("d", "dir"), Entry("d/x", "file", 10), Entry("e", "dir"), Entry("e/y", "file", 20)]
    )
    upper = LayerTree.from_members([Entry("d", "file", 1), Entry(".wh.e", "file")])
    a = analyze([lower, upper])
    assert {(w.path, w.how) for w in a.waste} == {("d/x", "overwritten"), ("e/y", "deleted")}
    assert set(a.final) == {"d"}
    assert glob_match("**/.git", ".git") and glob_match("**/.git", "src/app/.git")
    assert not glob_match("var/cache/*.deb", "var/cache/sub/x.deb")
    with pytest.raises(ImgtoolError):
        from imgtool.analyze import parse_size

        parse_size("12 parsecs")
