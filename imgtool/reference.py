"""Image references exactly as Docker resolves them (distribution/reference).

`parse("python")` gives `docker.io/library/python:latest`; a digest wins over a tag; an invalid
reference is refused with the reason. `parse_strict` is the grammar without normalization.
"""

from __future__ import annotations

import re

from imgtool.digest import LOWER_HEX, Digest, is_sha256
from imgtool.errors import InvalidDigest, InvalidReference
from imgtool.values import Frozen

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # Go's \w is ASCII; Python's is not
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

# The grammar's anchored patterns, compiled (and cached by re) on first use: a command that
# finds its image by the name as given never parses a reference. Also public as compiled
# patterns, ANCHORED_DOMAIN and the rest (the module's __getattr__).
_ANCHORED = {
    "ANCHORED_DOMAIN": rf"^{_DOMAIN}$",
    "ANCHORED_TAG": rf"^{_TAG}$",
    "ANCHORED_NAME": rf"^(?:({_DOMAIN})/)?({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)$",
    "ANCHORED_REFERENCE": rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$",
    "ANCHORED_IDENTIFIER": r"^[a-f0-9]{64}$",
}


def __getattr__(name: str) -> re.Pattern[str]:
    if name in _ANCHORED:
        return re.compile(_ANCHORED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _match(pattern: str, text: str) -> re.Match[str] | None:
    return re.fullmatch(_ANCHORED[pattern], text)  # `$` alone would allow a final newline


class Reference(Frozen):
    """A parsed reference. `registry` is empty only for `parse_strict` names without a domain."""

    __slots__ = ("registry", "repository", "tag", "digest")
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __init__(
        self, registry: str, repository: str, tag: str | None = None, digest: str | None = None
    ) -> None:
        self._init(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def familiar_name(self) -> str:
        """The short form Docker prints: `python`, `user/app`, `host:5000/a/b`."""
        if self.registry != DEFAULT_DOMAIN:
            return self.name
        repo = self.repository
        if repo.startswith(OFFICIAL_PREFIX) and repo.count("/") == 1:
            return repo[len(OFFICIAL_PREFIX) :]
        return repo

    @property
    def familiar(self) -> str:
        return self.familiar_name + self._suffix()

    @property
    def api_host(self) -> str:
        """The host that serves the distribution API: docker.io lives at registry-1.docker.io."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_DOMAIN else self.registry

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        if not _match("ANCHORED_TAG", tag):
            raise InvalidReference(
                tag, "a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -"
            )
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        _validate_digest(f"{self.name}@{digest}", digest)
        return Reference(self.registry, self.repository, self.tag, digest)

    def _suffix(self) -> str:
        s = f":{self.tag}" if self.tag else ""
        return s + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _validate_digest(text: str, digest: str) -> None:
    try:
        Digest.parse_sha256(digest)
    except InvalidDigest as e:
        raise InvalidReference(text, e.reason) from None


def parse_strict(text: str) -> Reference:
    """The reference grammar with no normalization (distribution's `Parse`)."""
    if text == "":
        raise InvalidReference(text, "the reference is empty")
    parts = split_common(text)
    if parts is None:
        parts = _split_by_grammar(text)
    domain, path, tag, digest = parts
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            text, f"the repository path is longer than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    if digest is not None:
        _validate_digest(text, digest)
    return Reference(domain, path, tag, digest)


def _split_by_grammar(text: str) -> tuple[str, str, str | None, str | None]:
    """(domain, path, tag, digest) by the grammar's regular expressions, or InvalidReference
    saying why not."""
    m = _match("ANCHORED_REFERENCE", text)
    if not m:
        if _match("ANCHORED_REFERENCE", text.lower()):
            raise InvalidReference(text, "the repository name must be lowercase")
        raise InvalidReference(text, _explain_format(text))
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    nm = _match("ANCHORED_NAME", name)
    assert nm is not None  # the full reference matched, so its name part does
    return nm.group(1) or "", nm.group(2), tag, digest


# A reference as users write them (lower-case ASCII names, an optional host[:port], tag and
# sha256 digest) is split by hand: compiling the grammar's expressions costs 1.5 ms, a tenth
# of what a re-pull does besides starting Python. Anything else goes to the grammar, which
# also explains refusals; tests/unit/test_reference.py holds both to the same answers.
_LOWER_ALNUM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALNUM_CHARS = _LOWER_ALNUM_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TAG_CHARS = _ALNUM_CHARS | frozenset("_.-")
_SEPARATORS = frozenset(("", ".", "_", "__"))


def split_common(text: str) -> tuple[str, str, str | None, str | None] | None:
    """(domain, path, tag, digest) of a reference of the common form, exactly as the grammar
    splits it; None for any other text (valid or not): the grammar decides those."""
    name_tag, at, digest = text.partition("@")
    if at and not is_sha256(digest):
        return None
    head, slash, last = name_tag.rpartition("/")
    last, colon, tag = last.partition(":")
    if colon and not _is_tag(tag):
        return None
    components = [*head.split("/"), last] if slash else [last]
    if not all(map(_is_path_component, components[1:])):
        return None
    if len(components) > 1 and _is_domain(components[0]):
        return components[0], "/".join(components[1:]), tag if colon else None, digest or None
    if _is_path_component(components[0]):
        return "", "/".join(components), tag if colon else None, digest or None
    return None


def _is_tag(text: str) -> bool:
    return 0 < len(text) <= 128 and text[0] not in ".-" and _TAG_CHARS.issuperset(text)


def _is_path_component(text: str) -> bool:
    """[a-z0-9]+ runs joined by one of . _ __ or a run of -."""
    if not text or text[0] not in _LOWER_ALNUM_CHARS or text[-1] not in _LOWER_ALNUM_CHARS:
        return False
    separator = ""
    for c in text:
        if c in _LOWER_ALNUM_CHARS:
            if separator not in _SEPARATORS and separator.strip("-"):
                return False
            separator = ""
        elif c in "._-":
            separator += c
        else:
            return False
    return True


def _is_domain(text: str) -> bool:
    """A host name (dot-separated labels of letters, digits and inner hyphens) and an
    optional port; an IPv6 address is left to the grammar."""
    host, colon, port = text.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return False
    labels = host.split(".")
    return all(
        label
        and label[0] in _ALNUM_CHARS
        and label[-1] in _ALNUM_CHARS
        and _ALNUM_CHARS.issuperset(label.replace("-", ""))
        for label in labels
    )


def _explain_format(text: str) -> str:
    """A best-effort reason why a reference does not match the grammar."""
    if text.startswith("/") or text.endswith("/") or "//" in text:
        return "empty path component"
    if text.count("@") > 1:
        return "more than one '@'"
    if "@" in text:
        digest = text.split("@", 1)[1]
        try:
            Digest.parse_sha256(digest)
        except InvalidDigest as e:
            return e.reason
    if ":" in text.rsplit("/", 1)[-1]:
        tag = text.rsplit("/", 1)[-1].split(":", 1)[1].split("@")[0]
        if tag and not _match("ANCHORED_TAG", tag):
            return f"invalid tag {tag!r} (up to 128 of [A-Za-z0-9_.-], not starting with . or -)"
    return "invalid reference format (names are lowercase [a-z0-9] separated by . _ __ - and /)"


def split_docker_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a registry when it has '.' or ':', is localhost,
    or has an upper-case letter; otherwise the name is on docker.io."""
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i == -1 or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[i + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_normalized_named(text: str) -> Reference:
    """Docker's normalization, no default tag (distribution's `ParseNormalizedNamed`)."""
    if len(text) == 64 and LOWER_HEX.issuperset(text):  # ANCHORED_IDENTIFIER
        raise InvalidReference(text, "a 64-character hexadecimal string is an id, not a repository")
    if text == "":
        raise InvalidReference(text, "the reference is empty")
    domain, remainder = split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidReference(text, f"the repository name ({remote}) must be lowercase")
    try:
        ref = parse_strict(f"{domain}/{remainder}")
    except InvalidReference as e:
        raise InvalidReference(text, e.reason) from None
    if not ref.registry:
        raise InvalidReference(text, "invalid reference format")
    return ref


def parse(text: str) -> Reference:
    """Parse a reference as `docker pull` does: normalized, `latest` by default, digest wins."""
    ref = parse_normalized_named(text)
    if ref.digest:
        return Reference(ref.registry, ref.repository, None, ref.digest)
    if ref.tag is None:
        return Reference(ref.registry, ref.repository, DEFAULT_TAG, ref.digest)
    return ref


def parse_name(text: str) -> Reference:
    """A repository name only (`host/repo`), normalized; tags and digests are refused."""
    ref = parse_normalized_named(text)
    if ref.tag or ref.digest:
        raise InvalidReference(text, "expected a repository name without tag or digest")
    return ref


def is_short_name(text: str) -> bool:
    """True when the text names no registry, so that docker.io (or an alias) applies."""
    i = text.find("/")
    if i == -1:
        return True
    first = text[:i]
    return not (any(c in first for c in ".:") or first == "localhost" or first.lower() != first)
