"""The one mapping from exceptions to exit statuses (cli/common.py failure_of), on exception
values, and through the CLI as click runs it."""

from __future__ import annotations

import errno
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from imgtool.cli import CONVENTIONS, cli
from imgtool.cli.common import Failure, failure_of
from imgtool.errors import (
    ImageNotFound,
    InvalidArgument,
    NotFound,
    RunStepFailed,
    SandboxError,
)
from imgtool.runner import RunError

NOT_FOUND = ImageNotFound("busybox")
STEP_FAILED = RunStepFailed("build", "RUN false", 3, "Containerfile:2")


@pytest.mark.parametrize(
    ("exc", "convention", "status"),
    [
        (NOT_FOUND, "plain", 1),
        (NOT_FOUND, "run", 125),
        (NOT_FOUND, "build", 1),
        (NOT_FOUND, "gate", 2),
        (NotFound("GET …: 404", status=404), "plain", 1),
        (InvalidArgument("memory", "x", "invalid memory size 'x'"), "plain", 2),
        (InvalidArgument("memory", "x", "invalid memory size 'x'"), "run", 125),
        (click.UsageError("no"), "plain", 2),
        (click.UsageError("no"), "run", 125),  # docker run: 125 for a bad flag too
        (click.UsageError("no"), "gate", 2),
        (STEP_FAILED, "build", 3),
        (RunStepFailed("s", "RUN kill -9 $$", 0), "build", 1),  # never 0 for a failure
        (RunStepFailed("s", "RUN x", 300), "build", 255),
        (STEP_FAILED, "plain", 1),
        (RunError("exec: 'nope': not found", 127), "run", 127),
        (RunError("exec: 'x': permission denied", 126), "run", 126),
        (RunError("set-up failed"), "run", 125),
        (RunError("set-up failed", 127), "plain", 1),  # 126/127 are run's convention only
        (SandboxError("mount", "/proc", errno.EPERM), "run", 125),
        (KeyboardInterrupt(), "plain", 130),
        (KeyboardInterrupt(), "run", 130),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/ctx"), "plain", 1),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), "run", 125),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), "gate", 2),
    ],
)
def test_status_by_type_and_convention(exc: BaseException, convention: str, status: int) -> None:
    failure = failure_of(exc, convention)  # type: ignore[arg-type]
    assert failure is not None and failure.status == status
    assert "\n" not in failure.message and failure.message


def test_messages_are_one_line_and_name_the_culprit() -> None:
    assert failure_of(NOT_FOUND) == Failure(str(NOT_FOUND), 1)
    oserr = FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/ctx")
    assert failure_of(oserr) == Failure("/x/ctx: No such file or directory", 1)
    multi = ImageNotFound("a\n  b")
    assert failure_of(multi) == Failure("image a b is not in the store (pull it first)", 1)


def test_a_servers_terminal_escapes_are_shown_not_obeyed() -> None:
    """A registry's reason phrase and error messages reach the message: an escape in them
    could retitle or clear the terminal, or draw a line of its own."""
    told = NotFound("GET http://r/v2/x: 404 Gone\x1b]0;owned\x07\x1b[2J\rimgtool: pulled")
    shown = failure_of(told)
    assert shown is not None and "\x1b" not in shown.message and "\x07" not in shown.message
    assert shown.message.endswith(r"404 Gone\x1b]0;owned\x07\x1b[2J imgtool: pulled")


def test_not_ours_is_left_alone() -> None:
    """Bugs keep their traceback; click's own exits (--help, ctx.exit) pass through."""
    assert failure_of(ValueError("bug")) is None
    assert failure_of(SystemExit(3)) is None
    assert failure_of(click.exceptions.Exit(0)) is None


def test_message_text_does_not_decide_the_status() -> None:
    """Classified by type: an error whose message reads like a step failure is still 1."""
    lookalike = ImageNotFound("failed with exit status 3 (stage build)")
    assert failure_of(lookalike, "build") == Failure(str(lookalike), 1)


def test_conventions_name_real_commands() -> None:
    ctx = click.Context(cli)
    for name in CONVENTIONS:
        assert cli.get_command(ctx, name) is not None, name


# --- through the CLI -------------------------------------------------------------------------


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "store"), *args])
    return result.exit_code, result.output


def test_check_of_a_missing_image_exits_2_with_one_line(tmp_path: Path) -> None:
    code, out = invoke(tmp_path, "check", "nosuchimage")
    assert code == 2
    assert (
        out == "imgtool: image docker.io/library/nosuchimage:latest is not in the store "
        "(pull it first)\n"
    )


def test_check_bad_size_is_a_usage_error(tmp_path: Path) -> None:
    code, out = invoke(tmp_path, "check", "--max-size", "lots", "nosuchimage")
    assert code == 2 and "invalid size 'lots'" in out


def test_layers_of_a_missing_image_exits_1(tmp_path: Path) -> None:
    code, out = invoke(tmp_path, "layers", "nosuchimage")
    assert code == 1 and out.startswith("imgtool: image ") and out.count("\n") == 1


def test_run_usage_error_is_125_with_clicks_usage_line(tmp_path: Path) -> None:
    code, out = invoke(tmp_path, "run", "--no-such-flag", "busybox")
    assert code == 125
    assert "Usage: " in out and "No such option '--no-such-flag'" in out


def test_ctrl_c_is_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imgtool.inspect

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(imgtool.inspect, "list_images", interrupted)
    code, out = invoke(tmp_path, "images")
    assert (code, out) == (130, "imgtool: interrupted\n")


def test_debug_prints_the_traceback_then_the_line(tmp_path: Path) -> None:
    code, out = invoke(tmp_path, "--debug", "inspect", "nosuchimage")
    assert code == 1
    assert out.startswith("Traceback (most recent call last):")
    assert "imgtool.errors.ImageNotFound" in out
    assert out.endswith(
        "imgtool: image docker.io/library/nosuchimage:latest is not in the store (pull it first)\n"
    )
    code, out = invoke(tmp_path, "inspect", "nosuchimage")
    assert code == 1 and "Traceback" not in out


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            'h:5000 "PATCH /v2/a/blobs/uploads/u1?_state=SIGNED&digest=x HTTP/1.1" 202 0',
            'h:5000 "PATCH /v2/a/blobs/uploads/u1?… HTTP/1.1" 202 0',
        ),
        ("GET https://alice:secret@h/token?account=alice", "GET https://alice:…@h/token?…"),
        ("Authorization: Basic YWxpY2U6c2VjcmV0", "Authorization: …"),
        ("sent Bearer eyJhbGciOi.x.y", "sent Bearer …"),
        ("password=secret&x=1", "password=…&x=1"),
        ("is it? no", "is it? no"),  # prose keeps its question marks
    ],
)
def test_debug_log_lines_are_redacted(line: str, shown: str) -> None:
    from imgtool.cli.debug import redact

    assert redact(line) == shown
