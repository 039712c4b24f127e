"""The lean parser (cli/fast.py) of `run`, `images`, `pull`, `push`, `copy`, `inspect`, `tag`,
`rmi` and `load` against click: on every command line it accepts it must give exactly click's
parameters, and whatever it does not accept is click's (help, errors). Every option of the
shared tables is exercised."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from imgtool.cli import COMMANDS, cli, fast, options

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
COPY_LINES = [
    ["docker://h:5000/a:1", "oci:/tmp/x:latest"],
    ["-q", "a", "b"],
    ["a", "b", "--quiet"],
    ["-aq", "a", "b"],
    ["--all", "a", "b"],
    ["--platform", "linux/arm64", "a", "b"],
    ["--platform=linux/arm/v7", "a", "b"],
    ["--src-creds", "u:p", "docker://h/a", "b"],
    ["--src-creds=u:", "docker://h/a", "b"],  # an empty password is a password
    ["--dest-creds", "u:p:q", "a", "docker://h/b"],
    ["--insecure", "--cert-dir", "/etc", "a", "b"],
    ["--cert-dir=/", "a", "b"],
    ["--", "-a", "-b"],
]
INSPECT_LINES = [
    ["img"],
    ["--raw", "img"],
    ["img", "--config"],
    ["--platform", "linux/arm64", "--raw", "--config", "img"],
    ["--platform=", "img"],
    ["--", "-img"],
]
TAG_LINES = [["a", "b"], ["--", "-a", "b"], ["-", "b"]]
RMI_LINES = [["a"], ["a", "b", "c"], ["--", "-a"]]
LOAD_LINES = [
    [],
    ["-i", "a.tar"],
    ["--input=a.tar", "-q"],
    ["--quiet", "--input", "x"],
    ["-qi", "x"],
]
LINES = {
    "run": RUN_LINES,
    "images": IMAGES_LINES,
    "pull": PULL_LINES,
    "push": PUSH_LINES,
    "copy": COPY_LINES,
    "inspect": INSPECT_LINES,
    "tag": TAG_LINES,
    "rmi": RMI_LINES,
    "load": LOAD_LINES,
}
TABLES = {
    "run": options.RUN,
    "images": options.IMAGES,
    "pull": options.PULL,
    "push": options.PUSH,
    "copy": options.COPY,
    "inspect": options.INSPECT,
    "tag": (),
    "rmi": (),
    "load": options.LOAD,
}
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
    ["--help", "images"],
    ["-h", "--root", "/x"],
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
    ["copy"],
    ["copy", "a"],
    ["copy", "a", "b", "c"],
    ["copy", "--help"],
    ["copy", "-h", "a", "b"],
    ["copy", "--bogus", "a", "b"],
    ["copy", "-aX", "a", "b"],
    ["copy", "--all=1", "a", "b"],
    ["copy", "--cert-dir", "/etc/passwd", "a", "b"],
    ["copy", "--src-creds", "u", "docker://h/a", "b"],  # click asks for the password
    ["copy", "--dest-creds=u", "a", "docker://h/b"],
    ["copy", "--all", "--platform", "linux/amd64", "a", "b"],  # click's usage errors
    ["copy", "--src-creds", "u:p", "oci:/x", "b"],
    ["copy", "--dest-creds", "u:p", "a", "b"],
    ["copy", "--dest-creds", "u:p", "a", "oci:"],  # a malformed location
    ["inspect"],
    ["inspect", "a", "b"],
    ["inspect", "--help", "a"],
    ["inspect", "--raw=1", "a"],
    ["inspect", "--platform"],
    ["tag", "a"],
    ["tag", "a", "b", "c"],
    ["tag", "-f", "a", "b"],
    ["tag", "-h"],
    ["rmi"],
    ["rmi", "-f", "a"],
    ["rmi", "a", "--help"],
    ["load", "extra"],
    ["load", "-i"],
    ["load", "-i", "-"],  # a value that looks like an option: click decides
    ["load", "-x"],
    ["save", "a"],  # no table of its own
    ["gc"],
]


def click_params(name: str, args: list[str]) -> dict[str, object]:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    with command.make_context(name, list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize(
    ("command", "args"),
    [(command, args) for command, lines in LINES.items() for args in lines],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_lines_parse_as_click_parses_them(command: str, args: list[str]) -> None:
    parsed = fast.parse([command, *args])
    assert parsed is not None, args
    assert parsed.command == command
    assert parsed.params == click_params(command, args)


def test_every_command_of_the_lean_parser_is_compared() -> None:
    lean = {c for c in COMMANDS if fast.parse([c, *LINES.get(c, [["x"]])[0]]) is not None}
    assert lean == set(LINES) == set(TABLES)


@pytest.mark.parametrize("argv", DEFERRED, ids=" ".join)
def test_what_the_lean_parser_does_not_take_is_left_to_click(argv: list[str]) -> None:
    assert fast.parse(argv) is None


@pytest.mark.parametrize("command", TABLES)
def test_every_spelling_of_every_option_is_compared(command: str) -> None:
    lines = LINES[command]
    used = {arg.partition("=")[0] for line in lines for arg in line}
    used |= {f"-{c}" for line in lines for a in line if a[:1] == "-" != a[1:2] for c in a[1:]}
    missing = [d for opt in TABLES[command] for d in opt.decls if d not in used]
    assert not missing


def test_the_click_commands_are_made_from_the_tables() -> None:
    for name, table in TABLES.items():
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        opts = [p for p in command.params if isinstance(p, click.Option)]
        assert [tuple(p.opts + p.secondary_opts) for p in opts] == [o.decls for o in table]
        assert [p.help for p in opts] == [o.help for o in table]
        assert [p.metavar for p in opts] == [o.metavar for o in table]


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


def _cli_run(
    kind: str, argv: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None
) -> tuple[int, str, str, bool]:
    """(status, stdout, stderr, click loaded) of `imgtool ARGV` through main() ("lean") or
    straight through the click group ("click"), stdout and stderr pipes."""
    entry = "main()" if kind == "lean" else "cli(prog_name='imgtool')"
    script = (
        "import sys\nsys.argv = ['imgtool', *sys.argv[1:]]\n"
        f"from imgtool.cli import {entry.partition('(')[0]}\n"
        f"try:\n    {entry}\nfinally:\n    print('click' in sys.modules, file=sys.stderr)\n"
    )
    env = {"IMGTOOL_ROOT": str(tmp_path / "store"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    env["CONTAINERS_REGISTRIES_CONF"] = str(tmp_path / "registries.conf")
    env.update(extra_env or {})
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


def test_a_failing_copy_says_and_exits_as_under_click(tmp_path: Path) -> None:
    layout = f"oci:{tmp_path / 'layout'}:latest"
    lines = [
        ["copy", "-q", "docker://127.0.0.1:1/nothing/here:1", layout],  # refused
        ["copy", "not-in-the-store", layout],
        ["copy", "--platform", "nonsense//", "docker://127.0.0.1:1/x", layout],
        ["copy", "docker-daemon:x", layout],
        ["copy", "--src-creds", "u:p", "docker://127.0.0.1:1/x:1", layout],
    ]
    for argv in lines:
        lean = _cli_run("lean", argv, tmp_path)
        under_click = _cli_run("click", argv, tmp_path)
        assert lean[:3] == under_click[:3], argv
        assert lean[0] != 0 and lean[2].startswith("imgtool: "), argv
        assert not lean[3] and fast.parse(argv) is not None  # the lean path was taken
    assert not (tmp_path / "layout").exists()


@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=repr)
def test_a_copy_prints_what_click_prints(quiet: list[str], tmp_path: Path) -> None:
    from tests.unit.test_import_cost import store_with_one_image

    store_with_one_image(tmp_path / "store")
    runs = {}
    for kind in ("lean", "click"):
        argv = ["copy", *quiet, "one", f"oci:{tmp_path / kind}:latest"]
        runs[kind] = _cli_run(kind, argv, tmp_path)
        assert runs[kind][0] == 0, runs[kind]
    lean, under_click = runs["lean"], runs["click"]
    assert lean[1].replace(str(tmp_path / "lean"), "DIR") == under_click[1].replace(
        str(tmp_path / "click"), "DIR"
    )
    assert lean[2] == under_click[2]  # the progress lines (none with -q)
    assert bool(lean[2]) != bool(quiet)
    assert not lean[3]
    index = [(tmp_path / kind / "index.json").read_bytes() for kind in ("lean", "click")]
    assert index[0] == index[1]


def test_a_credential_without_password_is_asked_for_or_refused() -> None:
    from imgtool.cli.actions import _credentials
    from imgtool.errors import InvalidArgument

    asked = _credentials("--src-creds", "alice", lambda user: f"secret of {user}")
    assert (asked.username, asked.password) == ("alice", "secret of alice")  # type: ignore[union-attr]
    given = _credentials("--src-creds", "alice:a:b", None)
    assert (given.username, given.password) == ("alice", "a:b")  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match="--dest-creds: no password for alice"):
        _credentials("--dest-creds", "alice", None)


def test_store_commands_say_and_exit_as_under_click(tmp_path: Path) -> None:
    """The same commands, one after the other, on two copies of a store: one through the lean
    path, one through click; every status and output the same, and the stores alike after."""
    from imgtool.copy import save
    from tests.unit.test_import_cost import store_with_one_image

    archive = tmp_path / "one.tar"
    save(store_with_one_image(tmp_path / "source"), ["one"], str(archive), "docker-archive", None)
    lines = [
        ["inspect", "one"],
        ["inspect", "--raw", "one"],
        ["inspect", "--config", "one"],
        ["inspect", "nothing-here"],
        ["inspect", "--platform", "nonsense//", "one"],
        ["tag", "one", "two"],
        ["tag", "nothing-here", "three"],
        ["tag", "one", "Not A Name"],
        ["rmi", "two", "nothing-here"],
        ["rmi", "one"],
        ["load", "-i", str(archive)],
        ["load", "-q", "--input", str(tmp_path / "missing.tar")],
        ["images", "--json"],
    ]
    for kind in ("lean", "click"):
        store_with_one_image(tmp_path / kind / "store")
    for argv in lines:
        lean = _cli_run("lean", argv, tmp_path / "lean")
        under_click = _cli_run("click", argv, tmp_path / "click")
        assert lean[:3] == under_click[:3], argv
        assert not lean[3] and fast.parse(argv) is not None, argv  # the lean path was taken
        assert lean[0] == 0 or lean[2].startswith("imgtool: "), argv
