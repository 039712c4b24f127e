"""The `imgtool` command's exit (cli.console): at once after flushing when Python's shutdown
has nothing left to do, else as Python exits, so that exit handlers run and threads finish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PRELUDE = """
import sys
sys.argv = ["imgtool", *{argv!r}]
{setup}
from imgtool.cli import console
console()
"""


def _console(tmp_path: Path, argv: list[str], setup: str = "") -> subprocess.CompletedProcess[str]:
    code = PRELUDE.format(argv=argv, setup=setup)
    env = {"IMGTOOL_ROOT": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_output_and_status_survive_the_quick_exit(tmp_path: Path) -> None:
    listed = _console(tmp_path, ["images"])
    assert (listed.returncode, listed.stdout.split()) == (
        0,
        ["NAME", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"],
    )
    missing = _console(tmp_path, ["inspect", "nosuch"])
    assert missing.returncode == 1 and missing.stderr.startswith("imgtool: ")


def test_exit_handlers_still_run(tmp_path: Path) -> None:
    r = _console(tmp_path, ["images"], "import atexit; atexit.register(print, 'handler ran')")
    assert r.returncode == 0 and r.stdout.endswith("handler ran\n")


def test_a_live_thread_is_waited_for(tmp_path: Path) -> None:
    setup = (
        "import threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start()"
    )
    r = _console(tmp_path, ["images"], setup)
    assert r.returncode == 0 and r.stdout.endswith("thread done\n")


def test_a_closed_pipe_exits_as_python_does(tmp_path: Path) -> None:
    """stdout closed by its reader: the flush fails, and the exit is Python's own, as it is
    for `main` alone (status and message alike)."""

    def closed_pipe_exit(entry: str) -> tuple[int, bool]:
        code = PRELUDE.format(argv=["images"], setup="").replace("console()", entry)
        code = code.replace("import console", "import console, main")
        env = {"IMGTOOL_ROOT": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        return proc.wait(timeout=60), "BrokenPipeError" in err

    assert closed_pipe_exit("console()") == closed_pipe_exit("main()") == (120, True)
