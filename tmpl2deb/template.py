"""A template as found in a .deb or a staging root, checked, and the chain of parents a delta
template needs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tmpl2deb import debformat
from tmpl2deb.errors import (
    FormatError,
    InputError,
    IntegrityError,
    MetadataError,
    UsageError,
    os_error,
)
from tmpl2deb.metadata import TemplateMetadata, deb_filename

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Template:
    """A template found in a .deb or installed in a staging root, with its checked metadata."""

    source: Path
    metadata: TemplateMetadata
    metadata_json: bytes
    manifest: bytes
    payload: debformat.Region
    control: dict[str, str]
    package_dir: str = ""  # the name of its directory under /usr/share/tmpl2deb/templates
    verified: bool = False  # apt checked the .deb against a signed index (stage)

    @property
    def name(self) -> str:
        """'package version', for messages."""
        return f"{self.metadata.package} {self.metadata.version}"


def open_template(source: Path, package: str = "") -> Template:
    """Read the template at SOURCE (a .deb, or a staging root; there PACKAGE, or the one
    template no other installed template is a delta of)."""
    try:
        if source.is_dir():
            return _from_staging(source, package)
        source.stat()
    except OSError as err:
        raise os_error(err, f"cannot read {source}") from err
    return _from_deb(source)


def _from_deb(path: Path) -> Template:
    from debian.deb822 import Deb822  # imported late: it is slow to import

    layout = debformat.read_layout(path)
    control = Deb822(debformat.read_control(layout))
    metadata_json = layout.metadata.read()
    template = Template(
        source=path,
        metadata=_parse(path, metadata_json),
        metadata_json=metadata_json,
        manifest=layout.manifest.read(),
        payload=layout.payload,
        control=dict(control),
        package_dir=layout.package,
    )
    _check_consistent(template, layout.payload_name)
    return template


ARCHIVES = Path("var/cache/apt/archives")  # where apt puts the .debs it downloads
VERIFIED = Path("var/lib/tmpl2deb/verified.json")  # what apt checked against a signed index


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def record_verified(root: Path, sha256: Mapping[str, str]) -> None:
    """Note the .debs apt has checked against the signed index (stage), with the sha256 the
    index gave each (file name: sha256): unpack need not hash their payloads again, and stage
    need not fetch them again, as long as the files are the same (device, inode, size,
    mtime)."""
    record = {p.name: [*_identity(p), sha256.get(p.name, "")]
              for p in sorted((root / ARCHIVES).glob("*.deb"))}  # fmt: skip
    (root / VERIFIED).parent.mkdir(parents=True, exist_ok=True)
    (root / VERIFIED).write_text(json.dumps(record, indent=1) + "\n")


def verified_sha256(root: Path) -> dict[str, str]:
    """The .debs of a staging root unchanged since apt checked them: file name: the sha256
    the signed index gave."""
    try:
        record = json.loads((root / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    for name, entry in record.items() if isinstance(record, dict) else ():
        path = root / ARCHIVES / name
        with contextlib.suppress(OSError):
            if isinstance(entry, list) and entry[:4] == _identity(path) and entry[4:]:
                found[name] = str(entry[4])
    return found


def staged_templates(root: Path) -> dict[str, Template]:
    """The templates apt downloaded into a staging root, by package name."""
    verified = verified_sha256(root)
    found = {}
    for path in sorted((root / ARCHIVES).glob("*.deb")):
        template = _from_deb(path)
        if path.name in verified:
            template = replace(template, verified=True)
        found[template.metadata.package] = template
    return found


def _from_staging(root: Path, package: str) -> Template:
    staged = staged_templates(root)
    if package:
        if package not in staged:
            raise InputError(
                f"{root}: template {package} is not staged in /{ARCHIVES} "
                f"(found: {', '.join(staged) or 'none'})"
            )
        return staged[package]
    parents = {t.metadata.parent_spec()[0] for t in staged.values() if t.metadata.delta}
    leaves = [t for name, t in staged.items() if name not in parents]
    if len(leaves) != 1:
        found = ", ".join(t.metadata.package for t in leaves) or "none"
        raise UsageError(
            f"{root}: expected one template staged in /{ARCHIVES} (found: {found}); "
            "name it with --package"
        )
    return leaves[0]


def _parse(where: Path, metadata_json: bytes) -> TemplateMetadata:
    try:
        return TemplateMetadata.from_json(metadata_json)
    except MetadataError as err:
        raise FormatError(f"{where}: bad metadata.json ({err})") from err


# Fields that make apt or dpkg act on other packages; a template has none (a delta's Depends
# on its exact parent is checked against metadata.json).
RELATIONS = ("Pre-Depends", "Recommends", "Suggests", "Enhances", "Breaks", "Conflicts",
             "Replaces", "Provides", "Built-Using", "Static-Built-Using", "Essential",
             "Protected")  # fmt: skip


def _check_consistent(template: Template, payload_name: str) -> None:
    """metadata.json, the control fields, the payload and the manifest must agree."""
    meta = template.metadata
    altered = (
        f"{template.source}: control fields and metadata.json disagree; the package was altered"
    )
    declared = [name for name in RELATIONS if name in template.control]
    if declared:
        raise FormatError(
            f"{template.source} is not a tmpl2deb template: it declares {', '.join(declared)}"
        )
    if template.control:
        if template.control.get("Package") != template.package_dir:
            raise IntegrityError(altered)
        if TemplateMetadata.from_control(template.control) != meta:
            raise IntegrityError(altered)
        depends = template.control.get("Depends", "")
        if depends != (meta.parent if meta.delta else ""):
            raise FormatError(
                f"{template.source} is not a tmpl2deb template: Depends: {depends} is not "
                + (f"its parent {meta.parent}" if meta.delta else "allowed (it is no delta)")
            )
    wanted = debformat.DELTA_PAYLOAD if meta.delta else debformat.PAYLOAD
    if payload_name != wanted:
        raise IntegrityError(
            f"{template.source}: a {meta.payload} template must hold {wanted}, not {payload_name}"
        )
    if hashlib.sha256(template.manifest).hexdigest() != meta.manifest_sha256:
        raise IntegrityError(f"{template.source}: manifest does not match its recorded sha256")


def resolve_chain(template: Template, with_parents: Sequence[Path] = ()) -> list[Template]:
    """[TEMPLATE, its parent, ..., the full template at the bottom] for a delta template.

    A parent is looked up in the staging root TEMPLATE was installed in, else among the
    WITH_PARENTS .debs, else as PACKAGE_VERSION_ARCH.deb next to the child's .deb.
    """
    offered = _Offered(with_parents)
    chain = [template]
    seen = {template.name}
    while chain[-1].metadata.delta:
        child = chain[-1]
        parent = _find_parent(child, offered)
        if parent.name in seen:
            raise FormatError(
                "the template chain has a cycle: "
                + " -> ".join([t.name for t in chain] + [parent.name])
            )
        _check_parent_digest(child, parent)
        seen.add(parent.name)
        chain.append(parent)
    return chain


class _Offered:
    """Parent .debs given on the command line, opened when first needed."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = list(paths)
        self._opened: list[Template] | None = None

    def get(self, package: str, version: str) -> Template | None:
        if self._opened is None:
            self._opened = [open_template(path) for path in self._paths]
        for template in self._opened:
            if (template.metadata.package, template.metadata.version) == (package, version):
                return template
        return None


def _find_parent(child: Template, offered: _Offered) -> Template:
    meta = child.metadata
    package, version = meta.parent_spec()
    parent = offered.get(package, version)
    beside = child.source.parent / deb_filename(package, version, meta.architecture)
    if parent is None and beside.is_file():
        parent = open_template(beside)
    if parent is None:  # apt's own file names: an epoch's colon is written %3a
        for deb in sorted(child.source.parent.glob(f"{package}_*_{meta.architecture}.deb")):
            found = open_template(deb)
            if found.metadata.version == version:
                parent = found
    if parent is None:
        raise FormatError(
            f"{child.name} is a delta of {meta.parent}, which is not given with --with-parent "
            f"or as {beside}"
        )
    found_meta = parent.metadata
    if (found_meta.package, found_meta.version) != (package, version):
        raise IntegrityError(
            f"{child.name} is a delta of {meta.parent}, but {parent.source} has {parent.name}"
        )
    if found_meta.architecture != meta.architecture:
        raise IntegrityError(
            f"{child.name} ({meta.architecture}) cannot be a delta of {parent.name} "
            f"({found_meta.architecture})"
        )
    return parent


def _check_parent_digest(child: Template, parent: Template) -> None:
    want, have = child.metadata.parent_sha256, parent.metadata.rootfs_sha256
    if want != have:
        raise IntegrityError(
            f"{child.name} is a delta of {parent.name} with rootfs sha256 {want[:16]}…, but "
            f"{parent.source} has {have[:16]}…; it is not the parent the delta was made against"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Expect:
    """What the build needs the template to be; empty fields are not checked."""

    architecture: str = ""
    distro: str = ""
    suite: str = ""
    signature: str = ""
    allow_mismatch: bool = False


def check_match(meta: TemplateMetadata, expect: Expect) -> None:
    """Refuse a template built for another architecture, distro, suite or build signature."""
    for name in ("architecture", "distro", "suite", "signature"):
        value, have = getattr(expect, name), getattr(meta, name)
        if value and value != have:
            message = (
                f"template {meta.package} {meta.version} has {name} {have or '(none)'!r}, "
                f"the build wants {value!r}"
            )
            if name == "signature":
                message += " (the template is stale: what it was built from has changed)"
            if not expect.allow_mismatch:
                raise InputError(message + "; use --allow-mismatch to build on it anyway")
            log.warning("%s (allowed by --allow-mismatch)", message)
