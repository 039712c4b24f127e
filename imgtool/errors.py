"""The one exception tree of imgtool. Imports nothing from imgtool.

Every error's str() is one line a user can act on; the CLI prints it as is.
"""

from __future__ import annotations


class ImgtoolError(Exception):
    """Base of every error imgtool raises on purpose."""


class InvalidReference(ImgtoolError):
    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"invalid reference {text!r}: {reason}")


class InvalidDigest(ImgtoolError):
    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"invalid digest {text!r}: {reason}")


class InvalidPlatform(ImgtoolError):
    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"invalid platform {text!r}: {reason}")


class InvalidArgument(ImgtoolError):
    """A value given to the library is malformed (`memory="lots"`): `name` is the argument as
    the caller spelled it, `value` what was given, `reason` a sentence naming the value."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class SpecError(ImgtoolError):
    """A manifest, index, config or layout that imgtool cannot accept."""


class UnsupportedMediaType(SpecError):
    def __init__(self, media_type: str, what: str = "") -> None:
        self.media_type = media_type
        where = f" ({what})" if what else ""
        super().__init__(f"unsupported media type {media_type!r}{where}")


class NoMatchingPlatform(SpecError):
    def __init__(self, wanted: str, available: list[str]) -> None:
        self.wanted = wanted
        self.available = available
        have = ", ".join(available) or "none"
        super().__init__(f"no image for platform {wanted} (the index has: {have})")


class DigestMismatch(ImgtoolError):
    def __init__(self, what: str, expected: str, actual: str, size: int | None = None) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        self.size = size
        extra = f" after {size} bytes" if size is not None else ""
        super().__init__(f"digest mismatch for {what}: expected {expected}, got {actual}{extra}")


class SizeMismatch(ImgtoolError):
    def __init__(self, what: str, expected: int, actual: int) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"size mismatch for {what}: expected {expected} bytes, got {actual}")


class StoreError(ImgtoolError):
    pass


class BlobNotFound(StoreError):
    def __init__(self, digest: str) -> None:
        self.digest = digest
        super().__init__(f"blob {digest} is not in the store")


class ImageNotFound(StoreError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"image {name} is not in the store (pull it first)")


class RegistryError(ImgtoolError):
    """An HTTP exchange with a registry failed; the URL never carries credentials."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        status: int | None = None,
        codes: tuple[str, ...] = (),
        repository: str = "",
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.codes = codes
        self.repository = repository  # set when the message already names the repository
        super().__init__(message)


class AuthError(RegistryError):
    pass


class NotFound(RegistryError):
    pass


class TooManyRequests(RegistryError):
    pass


class RegistryUnavailable(RegistryError):
    """The registry could not be reached at all (refused, DNS, TLS, timeouts)."""


class NetworkError(ImgtoolError):
    """Container networking failed: the bridge, a veth, an address, NAT or a published port."""


class CredentialsError(ImgtoolError):
    """Reading or storing credentials failed (a broken auth file, a failing helper)."""


class ConfigError(ImgtoolError):
    """A configuration file (registries.conf, .imgtool.toml) is malformed."""


class ContainerfileError(ImgtoolError):
    def __init__(
        self,
        message: str,
        *,
        file: str = "Containerfile",
        line: int = 0,
        column: int = 0,
        text: str = "",
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.text = text
        self.message = message
        where = f"{file}:{line}" + (f":{column}" if column else "")
        super().__init__(f"{where}: {message}")


class LayerError(ImgtoolError):
    def __init__(self, message: str, member: str = "") -> None:
        self.member = member
        super().__init__(f"{message}: {member}" if member else message)


class UnsafePath(LayerError):
    pass


class InvalidWhiteout(LayerError):
    pass


class SandboxError(ImgtoolError):
    def __init__(self, step: str, path: str = "", errno: int = 0, detail: str = "") -> None:
        import os

        self.step = step
        self.path = path
        self.errno = errno
        parts = [step]
        if path:
            parts.append(path)
        msg = ": ".join(parts)
        if errno:
            msg += f": {os.strerror(errno)} (errno {errno})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class BuildError(ImgtoolError):
    pass


class RunStepFailed(BuildError):
    """`output_tail`: the end of what the step wrote, when the build held its output back
    (quiet, or no output callback): the library prints nothing, its caller may."""

    def __init__(
        self, stage: str, instruction: str, status: int, where: str = "", output_tail: str = ""
    ) -> None:
        self.stage = stage
        self.instruction = instruction
        self.status = status
        self.output_tail = output_tail
        prefix = f"{where}: " if where else ""
        super().__init__(
            f"{prefix}{instruction!r} failed with exit status {status} (stage {stage})"
        )
