"""Where the store keeps an unpacked layer: a directory per ChainID (layer/unpacked.py says
why), `<store>/layers/sha256/<chain id hex>/diff`, and a short name for it under `layers/l/`.
Apart from the unpacking code, so that a run or a re-pull of an image whose layers are all
unpacked learns so, and where they are, without importing it."""

from __future__ import annotations

import os

from imgtool.digest import Digest

SHORT_ID_LEN = 12


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The ChainID of each layer: it and every layer below it (OCI image spec)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append(str(Digest.of(f"{out[-1]} {diff_id}".encode())))
    return out


def layers_root(store_root: str) -> str:
    return os.path.join(store_root, "layers")


def chain_dir(layers_root: str, key: str) -> str:
    """The directory of the layer whose ChainID is `key`."""
    return os.path.join(layers_root, "sha256", key.split(":", 1)[1])


def diff_dir(layers_root: str, key: str) -> str:
    """The layer's files (an overlay lower dir)."""
    return os.path.join(chain_dir(layers_root, key), "diff")


def short_name(key: str) -> str:
    """The layer's name under `layers/l/` (a symlink to its diff dir)."""
    return key.split(":", 1)[1][:SHORT_ID_LEN]


def unpacked_keys(store_root: str, diff_ids: list[str]) -> list[str] | None:
    """The keys (ChainIDs) of an image's layers, lowest first, when every one is unpacked in
    the store; else None."""
    root = layers_root(store_root)
    keys = chain_ids(diff_ids)
    return keys if all(os.path.isdir(diff_dir(root, key)) for key in keys) else None
