"""Template metadata: one frozen record, rendered as deb control fields and as metadata.json."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from tmpl2deb.errors import MetadataError

if TYPE_CHECKING:
    from debian.deb822 import Deb822

# Format 2: the payload's own sha256 is recorded and verified (a third of the bytes of the
# rootfs tar, which format 1 hashed); the rootfs identity is derived from it (rootfs_identity).
FORMAT_VERSION = 2
FORMATS = (1, 2)  # what unpack still reads
PACKAGE_PREFIX = "tmpl-"
DEFAULT_MAINTAINER = "Image Templates <image-templates@example.org>"
FULL, DELTA = (
    "full",
    "delta",
)  # the payload: the whole rootfs tar, or a tar delta against the parent's

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_ARCH_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_PARENT_RE = re.compile(r"(?P<package>[a-z0-9][a-z0-9+.-]+) \(= (?P<version>[^ ()]+)\)")
_DATE_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def package_name(name: str) -> str:
    """The Debian package name for image NAME: lower case, '_' as '-', prefixed with 'tmpl-'."""
    if not _NAME_RE.fullmatch(name):
        raise MetadataError(
            "name", f"{name!r} may only hold letters, digits and . _ + - (starting alphanumeric)"
        )
    base = name.lower().replace("_", "-")
    package = base if base.startswith(PACKAGE_PREFIX) else PACKAGE_PREFIX + base
    check_package(package)
    return package


def check_package(package: str) -> None:
    """Raise MetadataError unless PACKAGE is a valid Debian package name."""
    if not _PACKAGE_RE.fullmatch(package):
        raise MetadataError(
            "package", f"{package!r} is not a Debian package name ([a-z0-9][a-z0-9+.-]+)"
        )


def check_version(version: str) -> None:
    """Raise MetadataError unless VERSION is a valid Debian version (python-debian's parser,
    and, as dpkg --validate-version and policy want, an upstream part starting with a digit
    and no empty revision)."""
    from debian.debian_support import Version

    try:
        upstream = Version(version).upstream_version or ""
    except ValueError:
        upstream = ""
    if not upstream[:1].isdigit() or version.endswith("-"):
        raise MetadataError("version", f"{version!r} is not a Debian version (e.g. 1.0 or 2:1.2-3)")


def rootfs_identity(payload_sha256: str, parent_sha256: str = "") -> str:
    """The rootfs identity of a format 2 template (Template-Rootfs-Sha256): the sha256 of its
    payload for a full template; for a delta, the sha256 of 'PARENT_IDENTITY PAYLOAD_SHA256'.
    Verifying every payload of a chain against its digest thus proves the rootfs it rebuilds."""
    if not parent_sha256:
        return payload_sha256
    return hashlib.sha256(f"{parent_sha256} {payload_sha256}".encode()).hexdigest()


def parent_spec(field: str) -> tuple[str, str]:
    """(package, version) of a 'PACKAGE (= VERSION)' field (Template-Parent, a delta's
    Depends), or ('', '')."""
    match = _PARENT_RE.fullmatch(field)
    return (match["package"], match["version"]) if match else ("", "")


def parent_field(spec: str) -> str:
    """Turn the command-line form PKG=VERSION into the control form 'PKG (= VERSION)'."""
    package, sep, version = spec.partition("=")
    if not sep:
        raise MetadataError("parent", f"{spec!r} is not of the form PACKAGE=VERSION")
    check_package(package)
    check_version(version)
    return f"{package} (= {version})"


def deb_filename(package: str, version: str, architecture: str) -> str:
    """The Debian file name package_version_arch.deb (the epoch is not part of it)."""
    return f"{package}_{version.partition(':')[2] or version}_{architecture}.deb"


# Control field name for each metadata attribute, in the order they are written.
CONTROL_FIELDS = {
    "format": "Template-Format",
    "payload": "Template-Payload",
    "image": "Template-Image",
    "build_date": "Template-Build-Date",
    "features": "Template-Features",
    "distro": "Template-Distro",
    "suite": "Template-Suite",
    "parent": "Template-Parent",
    "parent_sha256": "Template-Parent-Rootfs-Sha256",
    "added": "Template-Added",
    "removed": "Template-Removed",
    "signature": "Template-Signature",
    "rootfs_sha256": "Template-Rootfs-Sha256",
    "payload_sha256": "Template-Payload-Sha256",
    "rootfs_size": "Template-Rootfs-Size",
    "rootfs_files": "Template-Rootfs-Files",
    "packages": "Template-Packages",
    "manifest_sha256": "Template-Manifest-Sha256",
    "excludes": "Template-Excludes",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class TemplateMetadata:
    """Everything a template records about its root filesystem (metadata.json, control)."""

    package: str
    version: str
    architecture: str
    image: str
    build_date: str
    distro: str
    suite: str
    rootfs_sha256: str
    rootfs_size: int
    rootfs_files: int
    packages: int
    manifest_sha256: str
    features: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    parent: str = ""
    parent_sha256: str = ""
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    signature: str = ""
    payload: str = FULL
    payload_sha256: str = ""  # format 2: of rootfs.tar.zst / rootfs.tardelta.zst
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_package(self.package)
        check_version(self.version)
        _check(self.architecture, _ARCH_RE, "architecture")
        _check(self.build_date, _DATE_RE, "build_date")
        _check(self.rootfs_sha256, _SHA256_RE, "rootfs_sha256")
        _check(self.manifest_sha256, _SHA256_RE, "manifest_sha256")
        for name in ("distro", "suite", "image"):
            _check(getattr(self, name), _WORD_RE, name)
        self._check_lists()
        if self.parent and not _PARENT_RE.fullmatch(self.parent):
            raise MetadataError("parent", f"{self.parent!r} is not 'PACKAGE (= VERSION)'")
        if self.parent_sha256:
            _check(self.parent_sha256, _SHA256_RE, "parent_sha256")
        if self.signature and not _WORD_RE.fullmatch(self.signature):
            raise MetadataError("signature", f"{self.signature!r} is not a single word")
        if self.payload not in (FULL, DELTA):
            raise MetadataError("payload", f"{self.payload!r} is neither {FULL!r} nor {DELTA!r}")
        if self.payload == DELTA and not (self.parent and self.parent_sha256):
            raise MetadataError("payload", "a delta template needs its parent and parent sha256")
        self._check_format()

    def _check_format(self) -> None:
        if self.format not in FORMATS:
            raise MetadataError(
                "format",
                f"version {self.format} is not supported (this tmpl2deb reads "
                f"{' and '.join(map(str, FORMATS))}); use a newer tmpl2deb",
            )
        if self.format >= 2:
            _check(self.payload_sha256, _SHA256_RE, "payload_sha256")
            parent = self.parent_sha256 if self.delta else ""
            if self.rootfs_sha256 != rootfs_identity(self.payload_sha256, parent):
                raise MetadataError("rootfs_sha256", "is not the identity its payload gives")
        elif self.payload_sha256:
            raise MetadataError("payload_sha256", "format 1 has none")

    def _check_lists(self) -> None:
        for feature in self.features:
            _check(feature, _WORD_RE, "features")
        for pattern in self.excludes:
            body = pattern[1:] if pattern[:1] in "!=~" else pattern
            if "\n" in pattern or not body.startswith("/"):
                raise MetadataError("excludes", f"{pattern!r} must start with /, !/, =/ or ~/")
        for name in ("added", "removed"):
            for package in getattr(self, name):
                _check(package, _PACKAGE_RE, name)

    @property
    def delta(self) -> bool:
        return self.payload == DELTA

    def parent_spec(self) -> tuple[str, str]:
        """(package, version) of the parent template, or ('', '')."""
        return parent_spec(self.parent)

    def to_json(self) -> str:
        """metadata.json: sorted keys, two-space indent, trailing newline."""
        data = asdict(self)
        for key in _LIST_FIELDS:
            data[key] = list(getattr(self, key))
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> TemplateMetadata:
        """Parse metadata.json; raise MetadataError on unknown or missing keys."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise MetadataError("metadata.json", f"not JSON ({err})") from err
        if not isinstance(data, dict):
            raise MetadataError("metadata.json", "not a JSON object")
        return _build(data)

    def control_fields(self) -> dict[str, str]:
        """The template's own control fields (Template-*), in a fixed order."""
        out: dict[str, str] = {}
        for attr, name in CONTROL_FIELDS.items():
            value = getattr(self, attr)
            if isinstance(value, tuple):
                if attr == "excludes":
                    value = "".join(f"\n {item}" for item in value)
                else:
                    value = " ".join(value)
            if value != "":
                out[name] = str(value)
        return out

    @classmethod
    def from_control(cls, control: Deb822 | dict[str, str]) -> TemplateMetadata:
        """Rebuild the metadata from a control paragraph (of a .deb or a Packages index)."""
        if "Template-Format" not in control:
            raise MetadataError("Template-Format", "missing: this is not a tmpl2deb template")
        data: dict[str, Any] = {
            "package": control.get("Package", ""),
            "version": control.get("Version", ""),
            "architecture": control.get("Architecture", ""),
        }
        for attr, name in CONTROL_FIELDS.items():
            value = control.get(name, "")
            if attr == "payload":
                value = value or FULL
            if attr in _LIST_FIELDS:
                data[attr] = _lines(value) if attr == "excludes" else value.split()
            else:
                data[attr] = value
        return _build(data)


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _check(value: object, pattern: re.Pattern[str], name: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise MetadataError(name, f"{value!r} does not match {pattern.pattern}")


_INT_FIELDS = ("rootfs_size", "rootfs_files", "packages", "format")
_LIST_FIELDS = ("features", "excludes", "added", "removed")


def _build(data: dict[str, Any]) -> TemplateMetadata:
    names = {f.name for f in fields(TemplateMetadata)}
    unknown = set(data) - names
    if unknown:
        raise MetadataError("metadata", f"unknown keys {sorted(unknown)}")
    values = dict(data)
    for key in _INT_FIELDS:
        if key in values:
            values[key] = _int(key, values[key])
    for key in _LIST_FIELDS:
        if key in values:
            values[key] = tuple(values[key])
    try:
        return TemplateMetadata(**values)
    except TypeError as err:
        raise MetadataError("metadata", str(err)) from err


def _int(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as err:
        raise MetadataError(key, f"{value!r} is not a number") from err
    if number < 0:
        raise MetadataError(key, f"{number} is negative")
    return number


@dataclass(frozen=True, kw_only=True, slots=True)
class PackageInfo:
    """The Debian-package side of a template .deb: the fields dpkg and apt need."""

    maintainer: str = DEFAULT_MAINTAINER
    section: str = "misc"
    priority: str = "optional"
    installed_size: int = 0


def render_control(meta: TemplateMetadata, info: PackageInfo) -> bytes:
    """The DEBIAN/control file of a template package: Depends only on the parent template,
    and only for a delta template (see README)."""
    from debian.deb822 import Deb822  # imported late: it is slow to import, unpack needs none

    para = Deb822()
    para["Package"] = meta.package
    para["Version"] = meta.version
    para["Architecture"] = meta.architecture
    para["Maintainer"] = info.maintainer
    para["Installed-Size"] = str(info.installed_size)
    if meta.delta:
        para["Depends"] = meta.parent  # apt brings the parent into the staging root with it
    para["Section"] = info.section
    para["Priority"] = info.priority
    for name, value in meta.control_fields().items():
        para[name] = value
    para["Description"] = _description(meta)
    return para.dump().encode()


def _description(meta: TemplateMetadata) -> str:
    return (
        f"image template {meta.image} ({meta.distro} {meta.suite} {meta.architecture})\n"
        f" Root filesystem of the image {meta.image}, packed by tmpl2deb with\n"
        f" {meta.packages} Debian packages. Installing this package only places the\n"
        " template under /usr/share/tmpl2deb; 'tmpl2deb unpack' extracts the rootfs."
        + (
            f"\n .\n This is a delta template: its payload is a tar delta against the rootfs\n"
            f" of its parent {meta.parent}, which it depends on."
            if meta.delta
            else ""
        )
    )
