"""OCI image values: Platform, Descriptor, Manifest, Index, ImageConfig; parsing and validation.

Parsing is typed and strict about types (a string where a number belongs is refused, as the OCI
schema does); the raw bytes are kept beside a parsed manifest or index because its digest is
the digest of exactly those bytes. `validate(media_type, raw)` adds the schema's remaining rules.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

from imgtool import mediatypes as mt
from imgtool.digest import Digest
from imgtool.errors import InvalidDigest, InvalidPlatform, NoMatchingPlatform, SpecError
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

# patterns, compiled (and cached by re) on first use
_MEDIA_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
_URI = r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$"
_ENV = r"(?s)^[^=]+=.*$"
_LAYOUT_VERSION = r"^1\.[0-9]+\.[0-9]+$"


# --- small typed readers; each names the field that is wrong ---------------------------------


def _obj(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise SpecError(f"{what} must be a JSON object")
    return doc


def _field(doc: Mapping[str, Any], key: str, what: str, required: bool) -> Any:
    """`doc[key]`, None when it is absent or null (JSON's null counts as absent, as Go's
    decoder has it); a SpecError then if it is `required`."""
    v = doc.get(key)
    if v is None and required:
        raise SpecError(f"{what}.{key} is missing")
    return v


def _str(doc: Mapping[str, Any], key: str, what: str, required: bool = False) -> str | None:
    v = _field(doc, key, what, required)
    if v is not None and not isinstance(v, str):
        raise SpecError(f"{what}.{key} must be a string")
    return v


def _int(doc: Mapping[str, Any], key: str, what: str, required: bool = False) -> int | None:
    v = _field(doc, key, what, required)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise SpecError(f"{what}.{key} must be an integer")
    return v


def _str_map(doc: Mapping[str, Any], key: str, what: str) -> dict[str, str]:
    v = doc.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise SpecError(f"{what}.{key} must be an object of strings")
    return dict(v)


def _str_list(doc: Mapping[str, Any], key: str, what: str) -> list[str] | None:
    v = doc.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SpecError(f"{what}.{key} must be an array of strings")
    return list(v)


def _media_type(value: str, what: str) -> str:
    if not re.fullmatch(_MEDIA_TYPE, value):
        raise SpecError(f"{what} {value!r} is not a valid media type")
    return value


def load_json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # [[[[... nests past the stack
        raise SpecError(f"{what} is not valid JSON: {e}") from None


# --- Platform ---------------------------------------------------------------------------------

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}


class Platform(Frozen):
    __slots__ = ("os", "architecture", "variant", "os_version")
    os: str
    architecture: str
    variant: str
    os_version: str

    def __init__(self, os: str, architecture: str, variant: str = "", os_version: str = "") -> None:
        self._init(os, architecture, variant, os_version)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/arm64`, `linux/arm/v7`, `linux/amd64/v2`; normalized as containerd does."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidPlatform(text, "expected os/arch or os/arch/variant")
        os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else ""
        return cls(os_, arch, variant).normalized()

    @classmethod
    def from_dict(cls, doc: Any, what: str = "platform") -> Platform:
        d = _obj(doc, what)
        return cls(
            os=_str(d, "os", what, required=True) or "",
            architecture=_str(d, "architecture", what, required=True) or "",
            variant=_str(d, "variant", what) or "",
            os_version=_str(d, "os.version", what) or "",
        )

    @classmethod
    def host(cls) -> Platform:
        machine = os.uname().machine.lower()
        arch = _ARCH_ALIASES.get(machine, machine)
        variant = ""
        if machine.startswith("armv"):
            arch, variant = "arm", "v" + machine[4]
        return cls("linux", arch, variant).normalized()

    def normalized(self) -> Platform:
        variant = self.variant
        if self.architecture == "arm64" and variant in ("8", "v8"):
            variant = ""
        if self.architecture == "arm" and variant in ("", "7"):
            variant = "v7"
        if self.architecture == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os, self.architecture, variant, self.os_version)

    def serves(self, want: Platform) -> bool:
        """An image for this platform serves a request for `want`: os and architecture equal,
        and the variant when one is asked for (as pull and the builder match them)."""
        h, w = self.normalized(), want.normalized()
        return (h.os, h.architecture) == (w.os, w.architecture) and (
            not w.variant or h.variant == w.variant
        )

    def candidates(self) -> list[Platform]:
        """Platforms this one runs, best first (arm v7 runs v6 and v5 too, as in containerd)."""
        me = self.normalized()
        out = [me]
        if me.architecture == "arm" and me.variant in ("v7", "v6"):
            for v in ("v6", "v5"):
                if v < me.variant:
                    out.append(Platform(me.os, "arm", v))
        if me.architecture == "amd64" and me.variant:
            level = int(me.variant[1:]) if me.variant[1:].isdigit() else 1
            out += [
                Platform(me.os, "amd64", f"v{n}" if n > 1 else "") for n in range(level - 1, 0, -1)
            ]
        return out

    def to_dict(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        return d

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


# --- Descriptor -------------------------------------------------------------------------------


class Descriptor(Frozen):
    __slots__ = (
        "media_type",
        "digest",
        "size",
        "annotations",
        "platform",
        "urls",
        "artifact_type",
        "data",
    )
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str]
    platform: Platform | None
    urls: tuple[str, ...]
    artifact_type: str | None
    data: bytes | None

    def __init__(
        self,
        media_type: str,
        digest: str,
        size: int,
        annotations: Mapping[str, str] | None = None,
        platform: Platform | None = None,
        urls: tuple[str, ...] = (),
        artifact_type: str | None = None,
        data: bytes | None = None,
    ) -> None:
        annotations = {} if annotations is None else annotations
        self._init(media_type, digest, size, annotations, platform, urls, artifact_type, data)

    @classmethod
    def from_dict(cls, doc: Any, what: str = "descriptor") -> Descriptor:
        d = _obj(doc, what)
        media_type = _media_type(
            _str(d, "mediaType", what, required=True) or "", f"{what}.mediaType"
        )
        digest = _str(d, "digest", what, required=True) or ""
        try:
            Digest.parse(digest)
        except InvalidDigest as e:
            raise SpecError(f"{what}.digest: {e}") from None
        size = _int(d, "size", what, required=True)
        assert size is not None
        if size < 0:
            raise SpecError(f"{what}.size must not be negative")
        urls = _str_list(d, "urls", what) or []
        for u in urls:
            if not re.fullmatch(_URI, u):
                raise SpecError(f"{what}.urls: {u!r} is not a URI")
        artifact_type = _str(d, "artifactType", what)
        if artifact_type is not None:
            _media_type(artifact_type, f"{what}.artifactType")
        data = None
        raw_data = _str(d, "data", what)
        if raw_data is not None:
            import base64  # imported here: few descriptors embed their data
            import binascii

            try:
                data = base64.b64decode(raw_data, validate=True)
            except (binascii.Error, ValueError):
                raise SpecError(f"{what}.data is not valid base64") from None
        plat = Platform.from_dict(d["platform"], f"{what}.platform") if "platform" in d else None
        return cls(
            media_type,
            digest,
            size,
            _str_map(d, "annotations", what),
            plat,
            tuple(urls),
            artifact_type,
            data,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_dict()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        if self.data is not None:
            import base64

            d["data"] = base64.b64encode(self.data).decode()
        return d

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            dict(annotations),
            self.platform,
            self.urls,
            self.artifact_type,
            self.data,
        )

    @property
    def ref_name(self) -> str | None:
        return self.annotations.get(REF_NAME)


REF_NAME = "org.opencontainers.image.ref.name"


def _descriptors(doc: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    v = doc.get(key)
    if v is None:
        raise SpecError(f"{what}.{key} is missing")
    if not isinstance(v, list):
        raise SpecError(f"{what}.{key} must be an array")
    return tuple(Descriptor.from_dict(x, f"{what}.{key}[{i}]") for i, x in enumerate(v))


def _schema_version(d: Mapping[str, Any], what: str) -> None:
    if _int(d, "schemaVersion", what, required=True) != 2:
        raise SpecError(f"{what}.schemaVersion must be 2")


# --- Manifest and Index -----------------------------------------------------------------------


class Manifest(Frozen):
    __slots__ = ("media_type", "config", "layers", "raw", "annotations", "subject", "artifact_type")
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes
    annotations: Mapping[str, str]
    subject: Descriptor | None
    artifact_type: str | None

    def __init__(
        self,
        media_type: str,
        config: Descriptor,
        layers: tuple[Descriptor, ...],
        raw: bytes,
        annotations: Mapping[str, str] | None = None,
        subject: Descriptor | None = None,
        artifact_type: str | None = None,
    ) -> None:
        annotations = {} if annotations is None else annotations
        self._init(media_type, config, layers, raw, annotations, subject, artifact_type)

    @classmethod
    def from_json(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        what = "manifest"
        d = _obj(load_json(raw, what), what)
        _schema_version(d, what)
        declared = _str(d, "mediaType", what)
        if declared is not None and declared not in mt.MANIFEST_TYPES:
            raise SpecError(f"{what}.mediaType {declared!r} is not an image manifest type")
        media_type = declared or media_type or mt.OCI_MANIFEST
        config = Descriptor.from_dict(d.get("config"), f"{what}.config")
        layers = _descriptors(d, "layers", what)
        subject = Descriptor.from_dict(d["subject"], f"{what}.subject") if "subject" in d else None
        artifact_type = _str(d, "artifactType", what)
        return cls(
            media_type,
            config,
            layers,
            bytes(raw),
            _str_map(d, "annotations", what),
            subject,
            artifact_type,
        )

    @property
    def digest(self) -> str:
        return str(Digest.of(self.raw))

    def descriptor(self, **annotations: str) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), dict(annotations))

    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]


class Index(Frozen):
    __slots__ = ("media_type", "manifests", "raw", "annotations", "subject")
    media_type: str
    manifests: tuple[Descriptor, ...]
    raw: bytes
    annotations: Mapping[str, str]
    subject: Descriptor | None

    def __init__(
        self,
        media_type: str,
        manifests: tuple[Descriptor, ...],
        raw: bytes,
        annotations: Mapping[str, str] | None = None,
        subject: Descriptor | None = None,
    ) -> None:
        annotations = {} if annotations is None else annotations
        self._init(media_type, manifests, raw, annotations, subject)

    @classmethod
    def from_json(cls, raw: bytes, media_type: str | None = None) -> Index:
        what = "index"
        d = _obj(load_json(raw, what), what)
        _schema_version(d, what)
        declared = _str(d, "mediaType", what)
        if declared is not None and declared not in mt.INDEX_TYPES:
            raise SpecError(f"{what}.mediaType {declared!r} is not an index type")
        manifests = _descriptors(d, "manifests", what)
        subject = Descriptor.from_dict(d["subject"], f"{what}.subject") if "subject" in d else None
        return cls(
            declared or media_type or mt.OCI_INDEX,
            manifests,
            bytes(raw),
            _str_map(d, "annotations", what),
            subject,
        )

    @property
    def digest(self) -> str:
        return str(Digest.of(self.raw))

    def descriptor(self, **annotations: str) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), dict(annotations))

    @classmethod
    def build(cls, manifests: list[Descriptor], media_type: str = mt.OCI_INDEX) -> Index:
        doc = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [m.to_dict() for m in manifests],
        }
        return cls.from_json(canonical_json(doc))


def sniff_media_type(raw: bytes) -> str | None:
    """The mediaType a manifest or index declares, or what its shape says."""
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(d, dict):
        return None
    if isinstance(d.get("mediaType"), str):
        return d["mediaType"]
    if d.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1
    if "manifests" in d:
        return mt.OCI_INDEX
    if "config" in d and "layers" in d:
        return mt.OCI_MANIFEST
    return None


def _declared_media_type(raw: bytes) -> str | None:
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(d, dict) and isinstance(d.get("mediaType"), str):
        return d["mediaType"]
    if isinstance(d, dict) and d.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1
    return None


def parse_manifest_or_index(raw: bytes, media_type: str | None) -> Manifest | Index:
    """Parse what a registry or a layout returned; the document's own mediaType wins."""
    declared = _declared_media_type(raw)
    kind = declared or media_type or sniff_media_type(raw) or ""
    if kind in mt.SCHEMA1_TYPES or media_type in mt.SCHEMA1_TYPES:
        raise SpecError(
            "Docker image manifest schema 1 is deprecated and not supported; "
            "push the image again with a current client"
        )
    if kind in mt.INDEX_TYPES:
        return Index.from_json(raw, kind)
    if kind in mt.MANIFEST_TYPES:
        return Manifest.from_json(raw, kind)
    raise SpecError(f"unsupported manifest media type {kind or 'unknown'!r}")


# --- ImageConfig ------------------------------------------------------------------------------

_CONFIG_STR_FIELDS = ("User", "WorkingDir", "StopSignal")
_CONFIG_LIST_FIELDS = ("Env", "Cmd", "Entrypoint", "Shell", "OnBuild")
_CONFIG_SET_FIELDS = ("ExposedPorts", "Volumes")


class ImageConfig(Frozen):
    """The image configuration; `doc` is the whole JSON, `raw` the bytes it was read from."""

    __slots__ = ("doc", "raw")
    doc: Mapping[str, Any]
    raw: bytes

    def __init__(self, doc: Mapping[str, Any], raw: bytes) -> None:
        self._init(doc, raw)

    @classmethod
    def from_json(cls, raw: bytes) -> ImageConfig:
        what = "config"
        d = _obj(load_json(raw, what), what)
        _str(d, "architecture", what, required=True)
        _str(d, "os", what, required=True)
        for key in ("variant", "created", "author", "os.version"):
            _str(d, key, what)
        c = d.get("config")
        if c is not None:
            c = _obj(c, "config.config")
            for key in _CONFIG_STR_FIELDS:
                _str(c, key, "config.config")
            for key in _CONFIG_LIST_FIELDS:
                _str_list(c, key, "config.config")
            for key in _CONFIG_SET_FIELDS:
                if c.get(key) is not None and not isinstance(c[key], dict):
                    raise SpecError(f"config.config.{key} must be an object")
            _str_map(c, "Labels", "config.config")
            for e in c.get("Env") or []:
                if not re.fullmatch(_ENV, e):
                    raise SpecError(f"config.config.Env entry {e!r} is not NAME=value")
        rootfs = _obj(d.get("rootfs"), "config.rootfs")
        if _str(rootfs, "type", "config.rootfs", required=True) != "layers":
            raise SpecError("config.rootfs.type must be 'layers'")
        diff_ids = _str_list(rootfs, "diff_ids", "config.rootfs")
        if diff_ids is None:
            raise SpecError("config.rootfs.diff_ids is missing")
        for x in diff_ids:
            try:
                Digest.parse(x)
            except InvalidDigest as e:
                raise SpecError(f"config.rootfs.diff_ids: {e}") from None
        history = d.get("history")
        if history is not None and (
            not isinstance(history, list) or not all(isinstance(h, dict) for h in history)
        ):
            raise SpecError("config.history must be an array of objects")
        return cls(d, bytes(raw))

    @property
    def digest(self) -> str:
        return str(Digest.of(self.raw))

    @property
    def platform(self) -> Platform:
        return Platform(self.doc["os"], self.doc["architecture"], self.doc.get("variant", ""))

    @property
    def config(self) -> Mapping[str, Any]:
        return self.doc.get("config") or {}

    @property
    def diff_ids(self) -> list[str]:
        return list(self.doc["rootfs"]["diff_ids"])

    @property
    def history(self) -> list[Mapping[str, Any]]:
        return list(self.doc.get("history") or [])

    @property
    def created(self) -> str | None:
        return self.doc.get("created")


# --- validation of whole documents (the schema's extra rules) ---------------------------------


def validate(media_type: str, raw: bytes) -> None:
    """Raise SpecError unless `raw` is a valid document of `media_type`, as the OCI schema says."""
    if media_type in mt.MANIFEST_TYPES:
        m = Manifest.from_json(raw, media_type)
        if not m.layers:
            raise SpecError("manifest.layers must hold at least one layer")
    elif media_type in mt.INDEX_TYPES:
        Index.from_json(raw, media_type)
    elif media_type in mt.CONFIG_TYPES:
        ImageConfig.from_json(raw)
    elif media_type == mt.OCI_DESCRIPTOR:
        Descriptor.from_dict(load_json(raw, "descriptor"))
    elif media_type == mt.OCI_LAYOUT_HEADER:
        validate_layout_header(raw)
    else:
        raise SpecError(f"no validator for media type {media_type!r}")


def validate_layout_header(raw: bytes) -> None:
    d = _obj(load_json(raw, "oci-layout"), "oci-layout")
    version = _str(d, "imageLayoutVersion", "oci-layout", required=True) or ""
    if not re.fullmatch(_LAYOUT_VERSION, version):
        raise SpecError(f"oci-layout: unsupported imageLayoutVersion {version!r}")


def canonical_json(doc: Any) -> bytes:
    """Compact JSON with sorted keys: the same document always has the same digest."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def select_platform(index: Index, wanted: Platform) -> Descriptor:
    """The index entry for `wanted`, as Docker picks: an exact match, else a compatible variant.

    Entries without a platform, for another OS, or attestations (`unknown/unknown`) never match.
    """
    entries = [d for d in index.manifests if d.platform is not None]
    for candidate in wanted.candidates():
        for d in entries:
            assert d.platform is not None
            p = d.platform.normalized()
            if (p.os, p.architecture) != (candidate.os, candidate.architecture):
                continue
            if p.variant == candidate.variant:
                return d
    # a platform asked for without a variant takes the first variant the index offers
    if not wanted.variant:
        for d in entries:
            assert d.platform is not None
            if (d.platform.os, d.platform.architecture) == (wanted.os, wanted.architecture):
                return d
    available = [str(d.platform) for d in entries if str(d.platform) != "unknown/unknown"]
    raise NoMatchingPlatform(str(wanted), available)
