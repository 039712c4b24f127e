"""The Dockerfile language: parsing, shell-word expansion, .dockerignore matching. No I/O."""

from imgtool.containerfile.parser import Containerfile, Heredoc, Instruction


def parse(text: str, file: str = "Containerfile") -> list[Instruction]:
    """The instructions of a Containerfile, in order (see parser.Instruction)."""
    from imgtool.containerfile.parser import parse as _parse

    return _parse(text, file).instructions


__all__ = ["Containerfile", "Heredoc", "Instruction", "parse"]
