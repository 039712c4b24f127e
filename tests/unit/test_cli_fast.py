"""The lean parser of `run`, `images`, `pull` and `push` (cli/fast.py) against click: on every command line it
accepts it must give exactly click's parameters, and whatever it does not accept is click's
(help, errors). Every option of the shared tables is exercised."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from imgtool.cli import cli, fast, options

RUN_LINES = [
    ["img"],
    ["img", "true"],
    ["img", "sh", "-c", "echo $x --rm"],
    ["--rm", "--network", "none", "img", "true"],
    ["--network=host", "--name", "web", "img"],
    ["--name=", "img"],
    ["-it", "img", "sh"],
    ["-dit", "img"],
    ["-i", "-t", "-d", "img"],
    ["--detach", "--interactive", "--tty", "--workdir", "/w", "--user=0", "img"],
    ["-e", "A=b", "-eC=d", "--env", "E=f", "--env=G=h", "img"],
    ["-w", "/srv", "-u", "1000:1000", "--hostname", "h", "img"],
    ["-wsrv", "-uapp", "img"],
    ["-v", "/a:/b", "--volume=/c:/d:ro", "img"],
    ["-p", "8080:80", "--publish", "53:53/udp", "-P", "--publish-all", "img"],
    ["-m", "64m", "--memory=1g", "--cpus", "1.5", "--pids-limit", "20", "img"],
    ["--pids-limit=-1", "img"],
    ["--pids-limit", " 7 ", "img"],
    ["--device", "/dev/null:/dev/n:rwm", "--cap-add", "NET_ADMIN", "--cap-drop=ALL", "img"],
    ["--privileged", "--init", "--read-only", "img"],
    ["--entrypoint", "", "img", "ls"],
    ["--entrypoint=/bin/sh", "--platform", "linux/arm64", "img"],
    ["--security-opt", "seccomp=unconfined", "--security-opt=no-new-privileges", "img"],
    ["--", "img", "--rm"],
    ["img", "--", "x"],
    ["--rm", "-", "x"],
    ["-e=A", "img"],
]
IMAGES_LINES = [[], ["--json"], ["--digests"], ["--digests", "--json"]]
PULL_LINES = [
    ["img"],
    ["host:5000/a/b:1"],
    ["-q", "img"],
    ["img", "--quiet"],
    ["-aq", "img"],
    ["-qa", "--insecure", "img"],
    ["--all-platforms", "img"],
    ["--platform", "linux/arm64", "img"],
    ["--platform=linux/arm/v7", "img", "-a"],
    ["--platform=", "img"],
    ["--cert-dir", "/etc", "img"],
    ["--cert-dir=/", "--insecure", "img"],
    ["--", "-img"],
]
PUSH_LINES = [
    ["img"],
    ["img", "host:5000/a/b:1"],
    ["-q", "img"],
    ["img", "--quiet", "dest"],
    ["--insecure", "-q", "img"],
    ["--cert-dir", "/etc", "img", "dest"],
    ["--cert-dir=/", "img"],
    ["--", "-img", "-dest"],
]
# what the lean parser leaves to click: help, mistakes, global options it does not handle
DEFERRED = [
    ["run"],
    ["run", "--rm"],
    ["run", "-h", "img"],
    ["run", "--help"],
    ["run", "--bogus", "img"],
    ["run", "-x", "img"],
    ["run", "-iX", "img"],
    ["run", "--rm=yes", "img"],
    ["run", "--pids-limit", "many", "img"],
    ["run", "--name"],
    ["run", "--name", "--rm", "img"],
    ["images", "extra"],
    ["images", "--json=1"],
    ["--debug", "images"],
    ["--version"],
    ["--help"],
    ["-h"],
    ["--rootx", "images"],
    ["pull"],
    ["pull", "a", "b"],
    ["pull", "-h"],
    ["pull", "--help", "x"],
    ["pull", "--bogus", "x"],
    ["pull", "-aQ", "x"],
    ["pull", "--quiet=1", "x"],
    ["pull", "--platform"],
    ["pull", "--platform", "-q", "x"],
    ["pull", "--cert-dir", "/nonexistent-dir", "x"],
    ["pull", "--cert-dir", "/etc/passwd", "x"],
    ["pull", "--cert-dir=", "x"],
    ["push"],
    ["push", "a", "b", "c"],
    ["push", "--help", "x"],
    ["push", "-qa", "x"],
    ["push", "-q=1", "x"],
    ["push", "--cert-dir", "/etc/passwd", "x"],
    [],
]


def click_params(name: str, args: list[str]) -> dict[str, object]:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    with command.make_context(name, list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("args", RUN_LINES, ids=" ".join)
def test_run_lines_parse_as_click_parses_them(args: list[str]) -> None:
    parsed = fast.parse(["run", *args])
    assert parsed is not None, args
    assert parsed.command == "run"
    assert parsed.params == click_params("run", args)


@pytest.mark.parametrize("args", IMAGES_LINES, ids=" ".join)
def test_images_lines_parse_as_click_parses_them(args: list[str]) -> None:
    parsed = fast.parse(["images", *args])
    assert parsed is not None and parsed.params == click_params("images", args)


@pytest.mark.parametrize("args", PULL_LINES, ids=" ".join)
def test_pull_lines_parse_as_click_parses_them(args: list[str]) -> None:
    parsed = fast.parse(["pull", *args])
    assert parsed is not None and parsed.command == "pull", args
    assert parsed.params == click_params("pull", args)


@pytest.mark.parametrize("args", PUSH_LINES, ids=" ".join)
def test_push_lines_parse_as_click_parses_them(args: list[str]) -> None:
    parsed = fast.parse(["push", *args])
    assert parsed is not None and parsed.command == "push", args
    assert parsed.params == click_params("push", args)


@pytest.mark.parametrize("argv", DEFERRED, ids=" ".join)
def test_what_the_lean_parser_does_not_take_is_left_to_click(argv: list[str]) -> None:
    assert fast.parse(argv) is None


@pytest.mark.parametrize(
    ("table", "lines"),
    [
        (options.RUN, RUN_LINES),
        (options.IMAGES, IMAGES_LINES),
        (options.PULL, PULL_LINES),
        (options.PUSH, PUSH_LINES),
    ],
)
def test_every_spelling_of_every_option_is_compared(
    table: tuple[options.Opt, ...], lines: list[list[str]]
) -> None:
    used = {arg.partition("=")[0] for line in lines for arg in line}
    used |= {f"-{c}" for line in lines for a in line if a[:1] == "-" != a[1:2] for c in a[1:]}
    missing = [d for opt in table for d in opt.decls if d not in used]
    assert not missing


def test_the_click_commands_are_made_from_the_tables() -> None:
    tables = (
        ("run", options.RUN),
        ("images", options.IMAGES),
        ("pull", options.PULL),
        ("push", options.PUSH),
    )
    for name, table in tables:
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        opts = [p for p in command.params if isinstance(p, click.Option)]
        assert [tuple(p.opts + p.secondary_opts) for p in opts] == [o.decls for o in table]
        assert [p.help for p in opts] == [o.help for o in table]


def test_root_comes_from_the_option_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGTOOL_ROOT", str(tmp_path / "env"))
    assert fast.parse(["images"]).root == str(tmp_path / "env")  # type: ignore[union-attr]
    assert fast.parse(["--root", "/x", "images"]).root == "/x"  # type: ignore[union-attr]
    assert fast.parse(["--root=/y", "images"]).root == "/y"  # type: ignore[union-attr]
    monkeypatch.setenv("IMGTOOL_ROOT", "")
    assert fast.parse(["images"]).root is None  # type: ignore[union-attr]
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert fast.parse(["--root", str(a_file), "images"]) is None  # click's error, not ours


def test_images_and_run_start_without_click(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom imgtool.cli import main\nsys.argv = ['imgtool', *sys.argv[1:]]\n"
        "try:\n    main()\nfinally:\n    print('click' in sys.modules, file=sys.stderr)\n"
    )
    env = {"IMGTOOL_ROOT": str(tmp_path / "store"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for argv in (["images"], ["run", "--network", "none", "nothing-here", "true"]):
        r = subprocess.run(
            [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True
        )
        assert r.stderr.splitlines()[-1] == "False", r.stderr
    assert r.returncode == 125 and "nothing-here" in r.stderr.splitlines()[0]


def test_the_lean_pull_parser_checks_cert_dir_as_click_does(tmp_path: Path) -> None:
    """click.Path(exists=True, file_okay=False): a directory it cannot read is click's error."""
    unreadable = tmp_path / "certs"
    unreadable.mkdir(mode=0)
    parsed = fast.parse(["pull", "--cert-dir", str(tmp_path), "img"])
    assert parsed is not None and parsed.params["cert_dir"] == str(tmp_path)
    if os.geteuid() != 0:  # root reads any directory, and so does click's check
        assert fast.parse(["pull", "--cert-dir", str(unreadable), "img"]) is None


def _cli_run(kind: str, argv: list[str], tmp_path: Path) -> tuple[int, str, str, bool]:
    """(status, stdout, stderr, click loaded) of `imgtool ARGV` through main() ("lean") or
    straight through the click group ("click")."""
    entry = "main()" if kind == "lean" else "cli(prog_name='imgtool')"
    script = (
        "import sys\nsys.argv = ['imgtool', *sys.argv[1:]]\n"
        f"from imgtool.cli import {entry.partition('(')[0]}\n"
        f"try:\n    {entry}\nfinally:\n    print('click' in sys.modules, file=sys.stderr)\n"
    )
    env = {"IMGTOOL_ROOT": str(tmp_path / "store"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    env["CONTAINERS_REGISTRIES_CONF"] = str(tmp_path / "registries.conf")
    r = subprocess.run(
        [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    *err, loaded = r.stderr.splitlines()
    return r.returncode, r.stdout, "\n".join(err), loaded == "True"


@pytest.mark.parametrize(
    "argv",
    [
        ["pull", "127.0.0.1:1/nothing/here:1"],  # nothing listens on port 1: refused
        ["pull", "-q", "--platform", "linux/arm64", "127.0.0.1:1/nothing/here:1"],
        ["pull", "--platform", "nonsense//", "127.0.0.1:1/x"],
        ["pull", "Not A Reference"],
        ["push", "-q", "not-in-the-store", "127.0.0.1:1/x:1"],
        ["push", "Not A Reference"],
    ],
    ids=" ".join,
)
def test_a_failing_transfer_says_and_exits_as_under_click(argv: list[str], tmp_path: Path) -> None:
    lean = _cli_run("lean", argv, tmp_path)
    under_click = _cli_run("click", argv, tmp_path)
    assert lean[:3] == under_click[:3]
    assert lean[0] != 0 and lean[2].startswith("imgtool: ")
    assert under_click[3] and fast.parse(argv) is not None  # the lean path was taken
