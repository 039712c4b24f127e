"""A value read from a stranger's manifest, config or command line with a newline at its end
is refused: a pattern anchored with `$` alone matches before a final newline, so every check
matches the whole text (re.fullmatch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imgtool import oci, reference
from imgtool.containers import Containers
from imgtool.digest import Digest
from imgtool.errors import ImgtoolError

HEX = "ab" * 32


@pytest.mark.parametrize(
    "check",
    [
        lambda: Digest.parse(f"sha256:{HEX}\n"),
        lambda: reference.parse("busybox\n"),
        lambda: reference.parse("busybox:latest\n"),
        lambda: oci.Descriptor.from_dict(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json\n",
                "digest": f"sha256:{HEX}",
                "size": 1,
            }
        ),
    ],
)
def test_a_final_newline_is_refused(check: Callable[[], object]) -> None:
    with pytest.raises((ImgtoolError, ValueError)):
        check()


def test_a_container_name_with_a_final_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImgtoolError, match="name"):
        Containers(tmp_path).create("web\n", "img", f"sha256:{HEX}", ["true"], True, False, {})
