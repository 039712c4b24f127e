"""The house rules, checked: imports only go down the floors, and each third-party package
stays in the one place that owns it (see README, Design)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "imgtool"

# floor of each top-level module or package of imgtool
FLOORS = {
    # L0 pure values
    **dict.fromkeys(["errors", "digest", "reference", "mediatypes", "oci", "progress"], 0),
    "values": 0,
    **dict.fromkeys(["whiteout", "filetree", "containerfile"], 0),
    # L1 streams
    **dict.fromkeys(["compression", "verify", "atomic", "inroot"], 1),
    # L2 mechanisms: disk, network, syscalls
    **dict.fromkeys(["store", "registry", "layer", "sandbox", "containers", "network"], 2),
    "tarball": 2,
    # L3 engines
    **dict.fromkeys(
        [
            "puller",
            "pusher",
            "inspect",
            "login",
            "runner",
            "cleanup",
            "sources",
            "analyze",
            "builder",
        ],
        3,
    ),
    **dict.fromkeys(["archive", "transports", "copy"], 3),
    "buildcache": 3,  # the registry (or a directory) as a shared build cache
    # L4 the command line
    **dict.fromkeys(["cli", "__main__", "api", "__init__"], 4),  # __init__: api's names, lazily
}

# third-party package -> the modules (first path parts) allowed to import it
THIRD_PARTY = {
    "requests": {"registry"},
    "urllib3": {"registry"},
    "certifi": {"registry"},
    "zstandard": {"compression"},
    "click": {"cli"},
    "cryptography": set(),
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_every_module_has_a_floor() -> None:
    for name, _ in _modules():
        assert name.split(".")[0] in FLOORS, f"imgtool/{name}.py has no floor in FLOORS"


def test_imports_only_go_down() -> None:
    bad = []
    for name, path in _modules():
        top = name.split(".")[0]
        mine = FLOORS[top]
        for imp in _imports(path):
            if not imp.startswith("imgtool"):
                continue
            parts = imp.split(".")
            if len(parts) == 1:
                continue  # `from imgtool import x` is checked through x below
            target = parts[1]
            if target == top:
                continue  # inside one package
            if FLOORS[target] > mine:
                bad.append(f"{name} (floor {mine}) imports {imp} (floor {FLOORS[target]})")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "imgtool":
                for a in node.names:
                    if (
                        a.name in FLOORS
                        and a.name != top
                        and FLOORS[a.name] > mine
                        and a.name != "__version__"
                    ):
                        bad.append(f"{name} imports imgtool.{a.name}")
    assert bad == []


def test_third_party_packages_stay_in_their_module() -> None:
    bad = []
    for name, path in _modules():
        top = name.split(".")[0]
        for imp in _imports(path):
            root = imp.split(".")[0]
            if root in THIRD_PARTY and top not in THIRD_PARTY[root]:
                bad.append(f"{name} imports {root}")
    assert bad == []
