"""publish and list: a reprepro repository of templates, laid out like Isar's base-apt."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tmpl2deb.errors import FormatError, MetadataError, Tmpl2debError
from tmpl2deb.metadata import TemplateMetadata, check_package
from tmpl2deb.run import run

if TYPE_CHECKING:
    from debian.deb822 import Deb822

log = logging.getLogger(__name__)

KEYRING = "archive-keyring.gpg"
DISTRIBUTIONS = Path("conf/distributions")
# Architectures a new distribution starts with: the ones Isar's base-apt lists.
ISAR_ARCHITECTURES = ("i386", "armhf", "arm64", "amd64", "mipsel", "riscv64")


def version_compare(a: str, b: str) -> int:
    """Compare two Debian versions as dpkg does: <0, 0 or >0 (python-debian: no python3-apt
    needed, so a plain virtualenv with python-debian publishes too)."""
    from debian.debian_support import version_compare as compare

    return int(compare(a, b))


@dataclass(frozen=True, slots=True)
class Distribution:
    """The settings of one distribution (suite) in conf/distributions."""

    codename: str
    components: tuple[str, ...] = ("main",)
    architectures: tuple[str, ...] = ISAR_ARCHITECTURES
    sign_with: str = ""

    def render(self) -> str:
        lines = [
            "Origin: tmpl2deb",
            "Label: tmpl2deb",
            f"Codename: {self.codename}",
            f"Architectures: {' '.join(self.architectures)}",
            f"Components: {' '.join(self.components)}",
            "Description: image templates (tmpl2deb)",
        ]
        if self.sign_with:
            lines.append(f"SignWith: {self.sign_with}")
        return "\n".join(lines) + "\n"


def _read_distributions(repo: Path) -> list[Deb822]:
    from debian.deb822 import Deb822

    path = repo / DISTRIBUTIONS
    try:
        with path.open() as f:
            return list(Deb822.iter_paragraphs(f))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise FormatError(f"cannot read {path}: {err.strerror}") from err


def configure(repo: Path, wanted: Distribution) -> None:
    """Create or extend conf/distributions so that WANTED's codename takes our packages."""
    from debian.deb822 import Deb822

    paragraphs = _read_distributions(repo)
    existing = [p for p in paragraphs if p.get("Codename") == wanted.codename]
    if not existing:
        paragraphs.append(Deb822(wanted.render()))
        log.info("Adding distribution %s to %s", wanted.codename, repo)
    else:
        para = existing[0]
        for field, values in (
            ("Architectures", wanted.architectures),
            ("Components", wanted.components),
        ):
            have = para.get(field, "").split()
            para[field] = " ".join(have + [v for v in values if v not in have])
        if wanted.sign_with:
            para["SignWith"] = wanted.sign_with
    text = "\n".join(p.dump() for p in paragraphs)
    path = repo / DISTRIBUTIONS
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmpl2deb-new")
    tmp.write_text(text)
    tmp.rename(path)


def _reprepro(repo: Path, *args: str, capture: bool = False) -> str:
    result = run(["reprepro", "--basedir", repo, "--silent", *args], capture=capture)
    return result.stdout or ""


def _check_key(key: str) -> None:
    try:
        run(["gpg", "--batch", "--list-secret-keys", key], capture=True)
    except Tmpl2debError as err:
        home = os.environ.get("GNUPGHOME", "~/.gnupg")
        raise Tmpl2debError(
            f"no secret key {key!r} in the gpg keyring ({home}) to sign the repository with"
        ) from err


def _common_suite(templates: Sequence[TemplateMetadata]) -> str:
    suites = {meta.suite for meta in templates}
    if len(suites) != 1:
        raise FormatError(
            f"the templates are for different suites ({', '.join(sorted(suites))}); "
            "publish them separately or give --codename"
        )
    return suites.pop()


def _check_newer(
    repo: Path,
    codename: str,
    current: dict[tuple[str, str], str],
    templates: Sequence[TemplateMetadata],
) -> None:
    """Refuse to publish a version older than the one the repository has (reprepro would
    silently keep the newer one)."""
    for meta in templates:
        old = current.get((meta.package, meta.architecture))
        if old is not None and version_compare(old, meta.version) > 0:
            raise FormatError(
                f"{repo} already has {meta.package} {old} ({meta.architecture}) in {codename}, "
                f"newer than {meta.version}; give the template a higher --version"
            )


def publish(
    repo: Path,
    debs: Sequence[Path],
    *,
    codename: str = "",
    component: str = "main",
    sign_with: str = "",
    force: bool = False,
) -> list[TemplateMetadata]:
    """Add template .debs to the repository at REPO (created if needed); return what was added."""
    from tmpl2deb.template import open_template

    if not debs:
        raise FormatError("no .deb given to publish")
    check_package(component)  # same character set as a package name
    templates = [open_template(deb).metadata for deb in debs]
    codename = codename or _common_suite(templates)
    check_package(codename)
    if sign_with:
        _check_key(sign_with)
    current = {(e.package, e.architecture): e.version for e in list_templates(repo, codename)}
    if not force:
        _check_newer(repo, codename, current, templates)
    architectures = [*ISAR_ARCHITECTURES]
    architectures += sorted({m.architecture for m in templates} - set(ISAR_ARCHITECTURES))
    wanted = Distribution(codename, (component,), tuple(architectures), sign_with)
    created = not repo.exists()
    conf = repo / DISTRIBUTIONS
    old_conf = conf.read_text() if conf.is_file() else None
    try:
        configure(repo, wanted)
        for deb, meta in zip(debs, templates, strict=True):
            log.info(
                "Publishing %s %s (%s) in %s", meta.package, meta.version, meta.architecture, repo
            )
            if force and (meta.package, meta.architecture) in current:
                _reprepro(
                    repo, "--architecture", meta.architecture, "remove", codename, meta.package
                )
            _reprepro(repo, "--component", component, "includedeb", codename, os.fspath(deb))
        _reprepro(repo, "export", codename)
        if sign_with:
            export_key(repo, sign_with)
    except BaseException:
        if created:
            shutil.rmtree(repo, ignore_errors=True)
        elif old_conf is not None:
            conf.write_text(old_conf)
        raise
    _warn_broken_chains(repo, codename)
    return templates


def _warn_broken_chains(repo: Path, codename: str) -> None:
    """A delta template whose parent version the repository does not hold cannot be installed
    (reprepro keeps one version of a package per distribution)."""
    entries = list_templates(repo, codename)
    held = {(e.package, e.version, e.architecture) for e in entries}
    for entry in entries:
        meta = entry.metadata
        if meta.delta and (*meta.parent_spec(), meta.architecture) not in held:
            log.warning(
                "%s %s in %s is a delta of %s, which the repository does not hold: apt cannot "
                "install it until that version is published",
                meta.package,
                meta.version,
                codename,
                meta.parent,
            )


def export_key(repo: Path, key: str) -> Path:
    """Write the public key next to dists/, for consumers' signed-by=."""
    keyring = repo / KEYRING
    tmp = keyring.with_name(keyring.name + ".tmpl2deb-new")
    run(["gpg", "--batch", "--yes", "--output", tmp, "--export", key])
    tmp.rename(keyring)
    return keyring


@dataclass(frozen=True, slots=True)
class Entry:
    """One template in a repository's Packages index."""

    codename: str
    component: str
    metadata: TemplateMetadata
    size: int
    filename: str

    @property
    def package(self) -> str:
        return self.metadata.package

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def architecture(self) -> str:
        return self.metadata.architecture


def list_templates(repo: Path, codename: str = "") -> list[Entry]:
    """The templates in the Packages indices of REPO (one codename, or all)."""
    from debian.deb822 import Deb822

    entries: list[Entry] = []
    dists = repo / "dists"
    for index in sorted(dists.glob(f"{codename or '*'}/*/binary-*/Packages")):
        suite, component = index.parts[-4], index.parts[-3]
        with index.open() as f:
            for para in Deb822.iter_paragraphs(f):
                if "Template-Format" not in para:
                    continue
                try:
                    meta = TemplateMetadata.from_control(para)
                except MetadataError as err:
                    raise FormatError(f"{index}: {para.get('Package')}: {err}") from err
                entries.append(
                    Entry(suite, component, meta, int(para.get("Size", 0)), para["Filename"])
                )
    return entries


def check_repo(repo: Path) -> None:
    if not (repo / "dists").is_dir():
        raise FormatError(f"{repo} is not a repository (no dists/ directory)")
