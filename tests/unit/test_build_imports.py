"""What a build loads: a fully cached build is mostly interpreter start-up and imports, so the
machinery for steps it does not run (the sandbox, the fork server, the layer writer, COPY's tar
and copy code) is loaded only by a build that runs such a step. Checked by the modules a fresh
interpreter holds, never by timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOT_FOR_A_BUILD_WITHOUT_STEPS = {
    "imgtool.builder.copy_step",
    "imgtool.builder.copier",
    "imgtool.builder.sandboxed",
    "imgtool.builder.forkserver",
    "imgtool.builder.stdincontext",
    "imgtool.layer.diff",
    "imgtool.compression",
    "imgtool.sandbox.runner",
    "tarfile",
    "socket",
    "pickle",
}


def _modules_after_build(tmp_path: Path, text: str) -> set[str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(text)
    code = (
        "import json, sys\n"
        "import imgtool\n"
        f"imgtool.build(imgtool.Store({str(tmp_path / 'store')!r}), {str(ctx)!r}, tags=['t:1'])\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_a_build_without_run_or_copy_loads_no_step_machinery(tmp_path: Path) -> None:
    mods = _modules_after_build(tmp_path, 'FROM scratch\nENV a=1\nLABEL b=2\nCMD ["x"]\n')
    assert "imgtool.builder.engine" in mods
    assert not NOT_FOR_A_BUILD_WITHOUT_STEPS & mods, NOT_FOR_A_BUILD_WITHOUT_STEPS & mods


def test_a_build_with_copy_loads_copy_step(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "f").write_text("x")
    mods = _modules_after_build(tmp_path, "FROM scratch\nCOPY f /f\n")
    assert "imgtool.builder.copy_step" in mods and "imgtool.layer.diff" in mods
