"""A template as found in a .deb or a staging root, checked, and the chain of parents a delta
template needs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tmpl2deb import debformat
from tmpl2deb.errors import FormatError, IntegrityError, MetadataError
from tmpl2deb.metadata import TemplateMetadata, deb_filename


@dataclass(frozen=True, slots=True)
class Template:
    """A template found in a .deb or installed in a staging root, with its checked metadata."""

    source: Path
    metadata: TemplateMetadata
    metadata_json: bytes
    manifest: bytes
    payload: debformat.Region
    control: dict[str, str]

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
        raise FormatError(f"cannot read {source}: {err.strerror}") from err
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
    )
    _check_consistent(template, layout.payload_name)
    return template


def installed_templates(root: Path) -> list[str]:
    """Names of the template packages installed in a staging root."""
    base = root / debformat.TEMPLATES_DIR
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def _from_staging(root: Path, package: str) -> Template:
    names = installed_templates(root)
    if package:
        if package not in names:
            raise FormatError(
                f"{root}: template {package} is not installed under /{debformat.TEMPLATES_DIR} "
                f"(found: {', '.join(names) or 'none'})"
            )
        return _installed(root, package)
    templates = [_installed(root, name) for name in names]
    parents = {t.metadata.parent_spec()[0] for t in templates if t.metadata.delta}
    leaves = [t for t in templates if t.metadata.package not in parents]
    if len(leaves) != 1:
        found = ", ".join(t.metadata.package for t in leaves) or "none"
        raise FormatError(
            f"{root}: expected one template under /{debformat.TEMPLATES_DIR} "
            f"(found: {found}); name it with --package"
        )
    return leaves[0]


def _installed(root: Path, package: str) -> Template:
    directory = root / debformat.TEMPLATES_DIR / package
    try:
        metadata_json = (directory / debformat.METADATA).read_bytes()
        metadata = _parse(directory, metadata_json)
        manifest = (directory / debformat.MANIFEST).read_bytes()
        payload_name = debformat.DELTA_PAYLOAD if metadata.delta else debformat.PAYLOAD
        payload_path = directory / payload_name
        size = payload_path.stat().st_size
    except OSError as err:
        raise FormatError(
            f"{directory}: incomplete template ({err.strerror}: {err.filename})"
        ) from err
    template = Template(
        source=root,
        metadata=metadata,
        metadata_json=metadata_json,
        manifest=manifest,
        payload=debformat.Region(payload_path, debformat.Span(0, size)),
        control={},
    )
    _check_consistent(template, payload_name)
    return template


def _parse(where: Path, metadata_json: bytes) -> TemplateMetadata:
    try:
        return TemplateMetadata.from_json(metadata_json)
    except MetadataError as err:
        raise FormatError(f"{where}: bad metadata.json ({err})") from err


def _check_consistent(template: Template, payload_name: str) -> None:
    """metadata.json, the control fields, the payload and the manifest must agree."""
    meta = template.metadata
    altered = (
        f"{template.source}: control fields and metadata.json disagree; the package was altered"
    )
    if template.control:
        if TemplateMetadata.from_control(template.control) != meta:
            raise IntegrityError(altered)
        if template.control.get("Depends", "") != (meta.parent if meta.delta else ""):
            raise IntegrityError(altered)
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
    parent: Template | None = None
    where = ""
    if child.source.is_dir():
        if package in installed_templates(child.source):
            parent = _installed(child.source, package)
        where = f"installed in {child.source}"
    else:
        parent = offered.get(package, version)
        beside = child.source.parent / deb_filename(package, version, meta.architecture)
        if parent is None and beside.is_file():
            parent = open_template(beside)
        where = f"given with --with-parent or as {beside}"
    if parent is None:
        raise FormatError(f"{child.name} is a delta of {meta.parent}, which is not {where}")
    found = parent.metadata
    if (found.package, found.version) != (package, version):
        raise IntegrityError(
            f"{child.name} is a delta of {meta.parent}, but {parent.source} has " f"{parent.name}"
        )
    if found.architecture != meta.architecture:
        raise IntegrityError(
            f"{child.name} ({meta.architecture}) cannot be a delta of {parent.name} "
            f"({found.architecture})"
        )
    return parent


def _check_parent_digest(child: Template, parent: Template) -> None:
    want, have = child.metadata.parent_sha256, parent.metadata.rootfs_sha256
    if want != have:
        raise IntegrityError(
            f"{child.name} is a delta of {parent.name} with rootfs sha256 {want[:16]}…, but "
            f"{parent.source} has {have[:16]}…; it is not the parent the delta was made against"
        )
