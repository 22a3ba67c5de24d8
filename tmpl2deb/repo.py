"""publish, remove, list and check: a repository of templates, laid out like Isar's base-apt.

tmpl2deb writes the pool and the indices itself (aptindex.py), because a template repository
must hold several versions of a template (a delta needs its parent's exact version; a pinned
release must stay installable), and reprepro 5.3 (Debian 12) keeps one version per package
and distribution. Every writer holds the repository's lock (lock.py); readers see the old or
the new indices, never a mix (by-hash and rename). The Packages indices are the database: a
repository made by reprepro (earlier tmpl2deb) is taken over as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tmpl2deb import aptindex, repostate
from tmpl2deb.errors import (
    CommandError,
    FormatError,
    InputError,
    IntegrityError,
    MetadataError,
    UsageError,
    os_error,
)
from tmpl2deb.lock import DEFAULT_TIMEOUT, LOCK_NAME, locked
from tmpl2deb.metadata import TemplateMetadata, check_package, deb_filename, parent_spec
from tmpl2deb.repostate import (
    DISTRIBUTIONS,
    KEYRING,
    Contents,
    Distribution,
    version_compare,
)
from tmpl2deb.run import run

if TYPE_CHECKING:
    from debian.deb822 import Deb822
    from tmpl2deb.template import Template

log = logging.getLogger(__name__)

# -- publish ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _same_file(para: Deb822, deb: Path) -> bool:
    """Whether DEB is the file the stanza describes (size first: hashing reads it whole)."""
    return para.get("Size") == str(deb.stat().st_size) and para.get("SHA256") == _sha256(deb)


def _new_offers(suite: Contents, offers: Sequence[_Offer], force: bool, renew: str) -> list[_Offer]:
    """The offers to add: one whose file is already published is left out; one whose version
    the repository holds with other contents is refused unless FORCE (RENEW says what to do)."""
    adding = []
    for offer in offers:
        found = suite.find(offer.package, offer.version, offer.architecture)
        if found is not None and _same_file(found[1], offer.deb):
            log.info("%s %s (%s) is already published", *offer.name)
        elif found is not None and not force:
            raise InputError(
                f"{suite.repo} already has {offer.package} {offer.version} ({offer.architecture}) "
                f"in {suite.settings.codename} with other contents; {renew}"
            )
        else:
            adding.append(offer)
    return adding


def _check_parents(suite: Contents, templates: Sequence[Template]) -> None:
    """Refuse a delta whose parent is neither offered with it nor in the repository."""
    offered = {(t.metadata.package, t.metadata.version, t.metadata.architecture) for t in templates}
    for template in templates:
        meta = template.metadata
        if not meta.delta:
            continue
        parent, version = meta.parent_spec()
        if (parent, version, meta.architecture) not in offered and not suite.find(
            parent, version, meta.architecture
        ):
            raise InputError(
                f"{meta.package} {meta.version} is a delta of {meta.parent}, which "
                f"{suite.repo} does not hold in {suite.settings.codename}: apt could not install "
                "it; publish the parent first (or with it)"
            )


def _dependants(suite: Contents, package: str, version: str, arch: str) -> list[str]:
    """The templates in SUITE that are deltas of PACKAGE VERSION."""
    found = []
    for _, para in suite.entries():
        name, wanted = parent_spec(para.get("Depends", ""))
        same = para["Architecture"] == arch and name == package
        if same and version_compare(wanted, version) == 0:
            found.append(f"{para['Package']} {para['Version']}")
    return found


def _retain(suite: Contents) -> list[str]:
    """Drop versions beyond the newest RETAIN of each template that nothing depends on."""
    from debian.debian_support import Version

    keep = suite.settings.retain
    if not keep:
        return []
    dropped = []
    groups: dict[tuple[str, str], list[Deb822]] = {}
    for _, para in suite.entries():
        groups.setdefault((para["Package"], para["Architecture"]), []).append(para)
    for (package, arch), paras in sorted(groups.items()):
        paras.sort(key=lambda p: Version(p["Version"]), reverse=True)
        for para in reversed(paras[keep:]):  # oldest first, so chains go from the leaves
            if not _dependants(suite, package, para["Version"], arch):
                suite.drop(para)
                dropped.append(f"{package} {para['Version']} ({arch})")
    return dropped


def publish(
    repo: Path,
    debs: Sequence[Path],
    *,
    codename: str = "",
    component: str = "main",
    sign_with: str = "",
    force: bool = False,
    retain: int | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> list[TemplateMetadata]:
    """Add template .debs to the repository at REPO (created if needed); return what was added."""
    from tmpl2deb.template import open_template

    if not debs:
        raise UsageError("no .deb given to publish")
    check_package(component)  # same character set as a package name
    templates = [open_template(deb) for deb in debs]
    metas = [t.metadata for t in templates]
    codename = codename or repostate.common_suite(metas)
    names = ", ".join(f"{m.package} {m.version}" for m in metas)
    offers = [
        _Offer(deb, t.control, m.package, m.version, m.architecture)
        for deb, t, m in zip(debs, templates, metas, strict=True)
    ]
    renew = (
        "give the template a new --version (or --force to replace it, which consumers that "
        "built from it notice)"
    )
    with _suite(repo, codename, component, offers, sign_with, retain, lock_timeout, names) as suite:
        adding = _new_offers(suite, offers, force, renew)
        _check_parents(suite, templates)
        _add(suite, component, adding)
    return metas


# The packages a platform's build made (Isar's isar-apt), published next to its templates: a
# component of their own (PACKAGES_COMPONENT), so that an application team's build can install
# one the template lacks, or build its own packages against a -dev package of the platform.
# The template components stay templates only, and the packages component takes no template.
PACKAGES_COMPONENT = "packages"


@dataclass(frozen=True, slots=True)
class _Offer:
    """A .deb to publish: its control fields and name."""

    deb: Path
    control: Mapping[str, str]
    package: str
    version: str
    architecture: str

    @property
    def name(self) -> tuple[str, str, str]:
        return self.package, self.version, self.architecture

    def pool_name(self, component: str) -> str:
        source = self.control.get("Source", "").split(" ")[0] or self.package
        prefix = source[:4] if source.startswith("lib") else source[:1]
        name = deb_filename(self.package, self.version, self.architecture)
        return f"pool/{component}/{prefix}/{source}/{name}"


def _read_package(deb: Path) -> _Offer:
    """A binary package (dpkg-deb reads its control fields); refuse a template."""
    from debian.deb822 import Deb822

    try:
        result = run(["dpkg-deb", "--field", deb], capture=True)
    except CommandError as err:
        raise FormatError(f"{deb} is not a Debian binary package: {err}") from err
    control = Deb822(result.stdout)
    if "Template-Format" in control:
        raise InputError(
            f"{deb} is a template ({control['Package']}); publish it without --packages, "
            "into a template component"
        )
    try:
        offer = _Offer(
            deb, control, control["Package"], control["Version"], control["Architecture"]
        )
    except KeyError as err:
        raise FormatError(f"{deb}: its control file has no {err.args[0]} field") from err
    check_package(offer.package)
    return offer


def publish_packages(
    repo: Path,
    debs: Sequence[Path],
    *,
    codename: str,
    component: str = PACKAGES_COMPONENT,
    sign_with: str = "",
    force: bool = False,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> list[tuple[str, str, str]]:
    """Add ordinary binary packages (not templates) to COMPONENT of REPO's CODENAME; every
    version stays, as for templates. Returns (package, version, architecture) of each."""
    if not debs:
        raise UsageError("no .deb given to publish")
    if not codename:
        raise UsageError("--packages needs --codename: a package does not record its suite")
    check_package(component)
    if component == "main":
        raise UsageError("the main component holds templates only; publish packages into another")
    offers = [_read_package(deb) for deb in debs]
    names = ", ".join(f"{o.package} {o.version}" for o in offers)
    with _suite(repo, codename, component, offers, sign_with, None, lock_timeout, names) as suite:
        for offer in offers:
            found = suite.find(offer.package, offer.version, offer.architecture)
            if found is not None and found[0] != component:
                raise InputError(
                    f"{repo} has {offer.package} {offer.version} in {found[0]}, not {component}"
                )
        renew = "build it with a new version (or --force to replace it)"
        _add(suite, component, _new_offers(suite, offers, force, renew))
    return [o.name for o in offers]


@contextlib.contextmanager
def _suite(
    repo: Path,
    codename: str,
    component: str,
    offers: Sequence[_Offer],
    sign_with: str,
    retain: int | None,
    lock_timeout: float,
    names: str,
) -> Iterator[Contents]:
    """The distribution CODENAME of REPO, configured to take COMPONENT and the architectures
    of OFFERS, under the writer lock; saved (retain applied, signed) when the block ends."""
    check_package(codename)
    if sign_with:
        repostate.check_key(sign_with)
    architectures = [*repostate.ISAR_ARCHITECTURES]
    offered = {o.architecture for o in offers} - {"all"}
    architectures += sorted(offered - set(repostate.ISAR_ARCHITECTURES))
    wanted = Distribution(codename, (component,), tuple(architectures), sign_with)
    with _writing(repo, f"tmpl2deb publish {names}", lock_timeout):
        settings = repostate.configure(repo, wanted, retain)
        suite = repostate.load(repo, settings)
        yield suite
        for gone in _retain(suite):
            log.info(
                "Removing %s from %s: beyond the %d versions kept", gone, codename, settings.retain
            )
        repostate.save(suite)
        if settings.sign_with:
            export_key(repo, settings.sign_with)
        repostate.collect_garbage(repo)


def _add(suite: Contents, component: str, offers: Sequence[_Offer]) -> None:
    for offer in offers:
        log.info("Publishing %s %s (%s) in %s", *offer.name, suite.repo)
        old = suite.find(offer.package, offer.version, offer.architecture)
        if old is not None:
            suite.drop(old[1])
        name = offer.pool_name(component)
        pool = aptindex.copy_into_pool(offer.deb, suite.repo / name)
        suite.add(component, aptindex.stanza(offer.control, name, pool))


def remove(
    repo: Path,
    package: str,
    version: str,
    *,
    codename: str = "",
    architecture: str = "",
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Remove PACKAGE VERSION (every architecture, or one) from REPO; refuse while a template
    in it is a delta of that version. Returns 'package version (arch) codename' removed."""
    check_repo(repo)
    removed: list[str] = []
    with _writing(repo, f"tmpl2deb remove {package} {version}", lock_timeout):
        for para in repostate.read_distributions(repo):
            settings = Distribution.from_paragraph(para)
            if codename and settings.codename != codename:
                continue
            suite = repostate.load(repo, settings)
            found = [p for _, p in suite.entries()
                     if p["Package"] == package and version_compare(p["Version"], version) == 0
                     and architecture in ("", p["Architecture"])]  # fmt: skip
            for entry in found:
                arch = entry["Architecture"]
                dependants = _dependants(suite, package, entry["Version"], arch)
                if dependants:
                    raise InputError(
                        f"cannot remove {package} {version} ({arch}) from {settings.codename}: "
                        f"{', '.join(dependants)} depend on it; remove those first"
                    )
                suite.drop(entry)
                removed.append(f"{package} {entry['Version']} ({arch}) {settings.codename}")
            if found:
                repostate.save(suite)
        if not removed:
            raise InputError(f"{repo} has no {package} {version} to remove")
        repostate.collect_garbage(repo)
    return removed


@contextlib.contextmanager
def _writing(repo: Path, what: str, timeout: float) -> Iterator[None]:
    """Hold the repository's writer lock, after removing what a dead writer left; a first
    publish that fails leaves no half-made repository behind."""
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise os_error(err, f"cannot create {repo}") from err
    with locked(repo, what, timeout):
        created = not (repo / DISTRIBUTIONS).exists()
        repostate.recover(repo)
        try:
            yield
        except BaseException:
            if created:
                _remove_new(repo)
            raise


def _remove_new(repo: Path) -> None:
    """Remove a repository this writer created, lock file last: a writer waiting for the lock
    notices that the file went and starts afresh."""
    for entry in repo.iterdir():
        if entry.name != LOCK_NAME:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (repo / LOCK_NAME).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        repo.rmdir()


def export_key(repo: Path, key: str) -> Path:
    """Write the public key next to dists/, for consumers' signed-by=."""
    keyring = repo / KEYRING
    tmp = keyring.with_name(aptindex.TMP_PREFIX + keyring.name)
    run(["gpg", "--batch", "--yes", "--output", tmp, "--export", key])
    tmp.rename(keyring)
    return keyring


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One template in a repository's Packages index."""

    codename: str
    component: str
    metadata: TemplateMetadata
    size: int
    filename: str
    sha256: str = ""

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
    entries: list[Entry] = []
    dists = repo / "dists"
    for index in sorted(dists.glob(f"{codename or '*'}/*/binary-*/Packages")):
        suite, component = index.parts[-4], index.parts[-3]
        for para in aptindex.read_packages(index):
            if "Template-Format" not in para:
                continue
            try:
                meta = TemplateMetadata.from_control(para)
            except MetadataError as err:
                raise FormatError(f"{index}: {para.get('Package')}: {err}") from err
            entries.append(
                Entry(suite, component, meta, int(para.get("Size", 0)), para["Filename"],
                      para.get("SHA256", ""))
            )  # fmt: skip
    return entries


def check_repo(repo: Path) -> None:
    if not (repo / "dists").is_dir():
        raise FormatError(f"{repo} is not a repository (no dists/ directory)")


def verify(repo: Path) -> int:
    """Check that every index the Releases list has its digest and every .deb an index names
    (templates and packages) has its size and sha256; the number of .debs checked."""
    check_repo(repo)
    for release in sorted((repo / "dists").glob("*/Release")):
        _verify_release(release)
    checked: set[str] = set()
    for index in sorted((repo / "dists").glob("*/*/binary-*/Packages")):
        for para in aptindex.read_packages(index):
            name = para["Filename"]
            if name in checked:
                continue  # an Architecture: all package, in every architecture's index
            path = repo / name
            try:
                size = path.stat().st_size
            except OSError as err:
                raise IntegrityError(f"{path}: {err.strerror} (named by {index})") from err
            if str(size) != para.get("Size") or _sha256(path) != para.get("SHA256"):
                raise IntegrityError(f"{path} does not match its entry in {index}")
            checked.add(name)
    return len(checked)


def _verify_release(release: Path) -> None:
    from debian.deb822 import Release

    with release.open() as f:
        para = Release(f)
    for item in para.get("SHA256", []):
        path = release.parent / item["name"]
        data = path.read_bytes() if path.is_file() else None
        if data is None or hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise IntegrityError(f"{path} does not match {release}")
