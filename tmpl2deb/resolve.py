"""resolve: which template (or platform package) an apt source holds for a spec, read from
its signed index by apt.

The identity printed (package, version, the .deb's sha256 from the signed Packages index, the
rootfs sha256) is what an Isar image puts in its task signature, as bitbake does with the
revision that SRCREV = "${AUTOREV}" resolves: a new release, or other content republished
under the same version, changes it; a pinned version does not. For the platform's packages
(--packages) it is where each .deb is and its sha256, for bitbake to fetch and check.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tmpl2deb import aptindex
from tmpl2deb.errors import CommandError, FormatError, InputError
from tmpl2deb.run import host_architecture
from tmpl2deb.stage import SOURCES, Resolved, Source, Spec, apt, choose, prepare

if TYPE_CHECKING:
    from debian.deb822 import Deb822

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _lists(apt_source: Source, architecture: str, what: str) -> Iterator[Path]:
    """A throw-away apt root with the package lists of APT_SOURCE (apt-get update)."""
    with tempfile.TemporaryDirectory(prefix="tmpl2deb-resolve-") as tmp:
        root = Path(tmp)
        prepare(root, architecture or host_architecture())
        (root / SOURCES).write_text(apt_source.line + "\n")
        log.info("Reading the package lists of %s", apt_source.uri)
        try:
            apt(root, "apt-get", "update", "--error-on=any", "-q")
        except CommandError as err:
            uri = apt_source.uri
            raise FormatError(f"cannot read the {what} repository {uri}: {err}") from err
        yield root


def resolve(source: str, spec: str, architecture: str = "") -> Resolved:
    """The template SPEC resolves to in SOURCE."""
    apt_source = Source.parse(source)
    wanted = Spec.parse(spec)
    with _lists(apt_source, architecture, "template") as root:
        return choose(root, wanted)


@dataclass(frozen=True, slots=True)
class PackageFile:
    """One binary package of a repository, as its signed index describes it."""

    package: str
    version: str
    architecture: str
    sha256: str
    url: str

    def line(self) -> str:
        """PACKAGE VERSION ARCH SHA256 URL, as `tmpl2deb resolve --packages` prints it."""
        return f"{self.package} {self.version} {self.architecture} {self.sha256} {self.url}"


def resolve_packages(
    source: str, specs: Sequence[str], architecture: str = ""
) -> list[PackageFile]:
    """The newest version of each package SPECS name (relations as in stage) in SOURCE, and
    of the packages of SOURCE they depend on (what the others depend on comes from the
    distribution, or is in the template): ordinary packages, not templates."""
    apt_source = Source.parse(source)
    wanted = [Spec.parse(spec) for spec in specs]
    available: dict[str, list[Deb822]] = {}
    with _lists(apt_source, architecture, "package") as root:
        # every version (apt-cache shows the candidate only): the lists as apt checked them
        # against the signed index
        for index in sorted((root / "var/lib/apt/lists").glob("*_Packages*")):
            for para in aptindex.read_packages(index):
                available.setdefault(para["Package"], []).append(para)
    chosen: dict[str, Deb822] = {}
    for spec in wanted:
        if spec.package not in available:
            raise InputError(f"{spec.package} is not in {apt_source.uri}")
        chosen[spec.package] = _newest(available[spec.package], spec)
    todo = list(chosen.values())
    while todo:
        for relation in _depends(todo.pop()):
            name = relation.package
            if name not in available:
                continue  # from the distribution, or in the template
            have = chosen.get(name)
            if have is not None:
                if relation.satisfied_by(have["Version"]):
                    continue
                raise InputError(
                    f"{name} {have['Version']} does not satisfy {relation}, which another "
                    f"package of {apt_source.uri} depends on"
                )
            chosen[name] = _newest(available[name], relation)
            todo.append(chosen[name])
    uri = apt_source.uri.rstrip("/")
    return [
        PackageFile(
            p["Package"], p["Version"], p["Architecture"], p["SHA256"], f"{uri}/{p['Filename']}"
        )
        for p in chosen.values()
    ]


def _newest(stanzas: Sequence[Deb822], spec: Spec) -> Deb822:
    from debian.debian_support import Version

    if any("Template-Format" in p for p in stanzas):
        raise InputError(f"{spec.package} is a template, not a package: name it in IMAGE_TEMPLATE")
    fitting = [p for p in stanzas if spec.satisfied_by(p["Version"])]
    if not fitting:
        have = ", ".join(sorted({p["Version"] for p in stanzas})) or "none"
        raise InputError(f"no version of {spec.package} satisfies {spec} (the source has {have})")
    return max(fitting, key=lambda p: Version(p["Version"]))


def _depends(para: Deb822) -> Iterator[Spec]:
    """Pre-Depends and Depends of a package: of each group of alternatives, the first."""
    from debian.deb822 import PkgRelation

    text = ", ".join(v for v in (para.get("Pre-Depends"), para.get("Depends")) if v)
    for group in PkgRelation.parse_relations(text):
        if not group:
            continue
        first = group[0]
        op, bound = first.get("version") or ("", "")
        yield Spec(first["name"], op=op, bound=bound)
