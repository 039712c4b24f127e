"""A refused pull names the image unless the registry's reason already names the repository:
decided by the error's `repository` attribute, never by searching its message."""

from __future__ import annotations

from imgtool.errors import AuthError
from imgtool.puller import _with_reference
from imgtool.reference import parse


def test_a_reason_that_mentions_the_name_in_passing_still_gets_the_reference() -> None:
    ref = parse("localhost:5000/library/app:1")
    e = AuthError("localhost:5000: unauthorized: library/app is a nice name", status=401)
    out = _with_reference(e, ref)
    assert str(out).startswith(f"{ref}: ")


def test_a_reason_that_names_the_repository_is_left_as_it_is() -> None:
    ref = parse("localhost:5000/library/app:1")
    e = AuthError(
        "localhost:5000: access denied to /v2/library/app/manifests/1 (denied)",
        status=403,
        repository="library/app",
    )
    assert _with_reference(e, ref) is e
