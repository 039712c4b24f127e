"""The CI skip policy of tests/conftest.py, run on small inner sessions with pytester: in CI an
unexpected skip fails the session and every skip is listed with its reason; outside CI nothing
changes. If the hooks stop being called, these tests fail rather than the policy going quiet."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import ALLOWED_SKIPS

pytest_plugins = ["pytester"]

# the inner session loads only the policy's entry point, not the suite's fixtures
INNER_CONFTEST = "from tests.conftest import pytest_configure  # noqa: F401\n"
ALLOWED_REASON = "this kernel runs no i386 calls (no IA32 emulation)"


@pytest.fixture
def session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., pytest.RunResult]:
    """Runs an inner session of one test module, `body`, with CI set to `ci`."""

    def run(body: str, ci: str = "true") -> pytest.RunResult:
        monkeypatch.setenv("CI", ci)
        return _session(pytester, body)

    return run


def _session(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner="import pytest\n\n" + body)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_an_unexpected_skip_fails_the_session_in_ci(
    session: Callable[..., pytest.RunResult],
) -> None:
    result = session(
        "def test_ok():\n    pass\n\n"
        "def test_gated():\n    pytest.skip('skopeo is not installed')\n",
    )
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*skips (CI)*",
            "SKIP test_inner.py::test_gated: skopeo is not installed [[]NOT ALLOWED in CI[]]",
            "1 skipped, 1 not allowed in CI*the session fails",
        ]
    )


def test_an_allowed_skip_passes_and_is_still_listed(
    session: Callable[..., pytest.RunResult],
) -> None:
    result = session(
        f"def test_i386():\n    pytest.skip({ALLOWED_REASON!r})\n",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [f"SKIP test_inner.py::test_i386: {ALLOWED_REASON} [[]allowed: *]", "1 skipped, 0 not*"]
    )


def test_a_module_skipped_at_collection_counts(
    pytester: pytest.Pytester, session: Callable[..., pytest.RunResult]
) -> None:
    pytester.makepyfile(test_other="def test_passes():\n    pass\n")
    result = session(
        "pytest.skip('corpus missing', allow_module_level=True)\n\ndef test_x():\n    pass\n",
    )
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIP test_inner.py: corpus missing [[]NOT ALLOWED in CI[]]"])


def test_skipif_marks_and_xfail(session: Callable[..., pytest.RunResult]) -> None:
    """A skipif mark is a skip like any other; an xfail is not a skip."""
    result = session(
        "@pytest.mark.skipif(True, reason='needs root')\ndef test_root():\n    pass\n\n"
        "@pytest.mark.xfail(reason='known bug')\ndef test_known():\n    assert False\n",
    )
    result.assert_outcomes(skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIP test_inner.py::test_root: needs root [[]NOT ALLOWED*"])
    result.stdout.no_fnmatch_line("SKIP *test_known*")


def test_a_failing_session_keeps_its_status(session: Callable[..., pytest.RunResult]) -> None:
    result = session("def test_bad():\n    assert False\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["0 skipped, 0 not allowed in CI"])


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_outside_ci_a_skip_is_only_a_skip(
    session: Callable[..., pytest.RunResult], ci: str
) -> None:
    result = session("def test_gated():\n    pytest.skip('skopeo is not installed')\n", ci=ci)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*skips (CI)*")


def test_every_allowed_reason_says_why() -> None:
    assert ALLOWED_SKIPS
    assert all(a.pattern and a.why for a in ALLOWED_SKIPS)
