"""Peer tools a test needs: test.sh installs them, so CI fails without one; elsewhere the test
skips, saying which tool is missing (never a silent `if shutil.which(...)` that drops checks)."""

from __future__ import annotations

import shutil

import pytest

from tests.support.corpus import in_ci


class ToolMissing(Exception):
    """A tool that test.sh installs is not on PATH in CI."""


def require_tool(name: str, package: str) -> str:
    """The path of `name`; fails in CI without it, skips elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian package {package}; test.sh installs it)"
    if in_ci():
        raise ToolMissing(message)
    pytest.skip(message)
