"""An unpacked layer's name in an overlay's lower dirs: its short link only when the link is
its own (a key is found that begins as another's in hours: 12 hex digits are 48 bits)."""

from __future__ import annotations

import os
from pathlib import Path

from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store


def two_layers_one_short_name(tmp_path: Path, start: str) -> tuple[LayerStore, str, str]:
    """Two unpacked layers whose keys begin with the same 12 hex digits `start`; the short
    link is the first one's."""
    layers = LayerStore(Store(tmp_path / "s"))
    first, second = "sha256:" + start + "1" * 52, "sha256:" + start + "2" * 52
    for key in (first, second):
        layers.diff_dir(key).mkdir(parents=True)
    (layers.root / "l").mkdir()
    (layers.root / "l" / layers.short_name(first)).symlink_to(f"../sha256/{start}{'1' * 52}/diff")
    return layers, first, second


def test_a_short_link_taken_by_a_key_that_begins_the_same_is_not_used(tmp_path: Path) -> None:
    layers, first, second = two_layers_one_short_name(tmp_path, "ab" * 6)
    assert layers.short_name(first) == layers.short_name(second)
    assert layers.lower_name(first) == f"l/{'ab' * 6}"
    own = layers.lower_name(second)  # the link names the first one's directory
    assert own == f"sha256/{'ab' * 6}{'2' * 52}/diff"
    assert os.path.samefile(layers.root / own, layers.diff_dir(second))


def test_removing_a_layer_leaves_the_short_link_another_layer_holds(tmp_path: Path) -> None:
    layers, first, second = two_layers_one_short_name(tmp_path, "cd" * 6)
    link = layers.root / "l" / layers.short_name(first)
    assert layers.remove_unused({first}) == [second]
    assert layers.lower_name(first) == f"l/{'cd' * 6}"  # still there: the first one's
    assert layers.remove_unused(set()) == [first]
    assert not os.path.lexists(link)  # its own: gone with it
