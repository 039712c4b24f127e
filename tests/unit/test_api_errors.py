"""The error tree as docs/api.md documents it: the network error in imgtool.errors, no import
cycle in imgtool/network, and no test names in library code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from imgtool import errors
from imgtool.network import ipam, links, netlink

NETWORK = Path(links.__file__).parent


def network_imports(path: Path) -> set[str]:
    """The imgtool.network modules `path` imports, at any depth of the module (function-level
    imports make cycles too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("imgtool.network."):
                out.add(node.module.rsplit(".", 1)[1])
            elif node.module == "imgtool.network":
                out |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.rsplit(".", 1)[1] for a in node.names if "network." in a.name}
    return out


def test_no_import_cycle_in_network() -> None:
    graph = {p.stem: network_imports(p) for p in NETWORK.glob("*.py") if p.stem != "__init__"}
    for start in graph:  # walk from each module with an explicit stack: no recursion
        seen: set[str] = set()
        stack = list(graph[start])
        while stack:
            mod = stack.pop()
            assert mod != start, f"imgtool/network/{start}.py is in an import cycle: {graph}"
            if mod not in seen:
                seen.add(mod)
                stack += graph.get(mod, set())


def test_network_error_is_in_the_tree() -> None:
    assert errors.NetworkError.__module__ == "imgtool.errors"
    assert issubclass(errors.NetworkError, errors.ImgtoolError)
    assert ipam.NetworkError is errors.NetworkError  # still importable where it was
    assert issubclass(netlink.NetlinkError, errors.NetworkError)


def test_library_code_names_no_test_prefix() -> None:
    for path in NETWORK.glob("*.py"):
        assert "imgtool-test" not in path.read_text(), path


def test_stale_takes_only_namespaces_imgtool_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another tool's (or a test's) imgtool-something namespace is never ours to remove."""
    for name in ("imgtool-0123456789ab", "imgtool-scratch", "imgtool-test-nl1", "other"):
        (tmp_path / name).touch()
    (tmp_path / "imgtool-0123456789abcd").touch()  # longer than netns_name() makes
    monkeypatch.setattr(links, "NETNS_DIR", str(tmp_path))
    monkeypatch.setattr(links, "in_use", lambda cid: False)
    assert links.stale() == ["0123456789ab"]
    assert links.netns_name("0123456789abcdef" * 4) == "imgtool-0123456789ab"
