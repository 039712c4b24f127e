"""`--chmod` values: an octal mode (`755`, `0640`) or a symbolic one as chmod(1) reads it
(`u+x`, `+x`, `go-w,o=r`, `a=rX`, `g=u`), applied to each copied file's own mode."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
# the bits each class owns: its rwx and its special bit (setuid, setgid, sticky)
_CLASS_MASK = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_PERM_BITS = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}
_SHIFT = {"u": 6, "g": 3, "o": 0}


@dataclass(frozen=True)
class ModeChange:
    text: str
    octal: int | None  # an absolute mode; else the symbolic clauses in `text` apply

    def apply(self, mode: int, is_dir: bool) -> int:
        """The new permission bits of a file whose bits are `mode`."""
        if self.octal is not None:
            return self.octal
        for clause in self.text.split(","):
            m = _CLAUSE.fullmatch(clause)
            assert m is not None  # parse_mode checked it
            who = m.group(1).replace("a", "ugo") or "ugo"
            mask = 0
            for c in who:
                mask |= _CLASS_MASK[c]
            for op, perms in _ACTION.findall(m.group(2)):
                bits = _bits(perms, mode, is_dir) & mask
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    mode = (mode & ~mask) | bits
        return mode & 0o7777


def _bits(perms: str, mode: int, is_dir: bool) -> int:
    if perms in _SHIFT:  # g=u: the bits another class has now
        return ((mode >> _SHIFT[perms]) & 0o7) * 0o111
    bits = 0
    for p in perms:
        if p == "X":  # execute for directories, or where someone may execute already
            bits |= 0o111 if is_dir or mode & 0o111 else 0
        else:
            bits |= _PERM_BITS[p]
    return bits


def parse_mode(text: str) -> ModeChange:
    """A --chmod value; ValueError naming it when it is neither octal nor symbolic."""
    if text and all(c in "01234567" for c in text):
        if int(text, 8) > 0o7777:
            raise ValueError(f"--chmod={text}: an octal mode is at most 7777")
        return ModeChange(text, int(text, 8))
    if not text or not all(_CLAUSE.fullmatch(c) for c in text.split(",")):
        raise ValueError(
            f"--chmod={text}: expected an octal mode (755) or a symbolic one (u+x, go-w, a=rX)"
        )
    return ModeChange(text, None)
