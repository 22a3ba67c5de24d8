"""What a template repository holds on disk: conf/distributions (the distributions and their
settings), the contents of each distribution (its Packages stanzas, read and written through
aptindex), what a writer that died left behind, and the pool files no index names any longer."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tmpl2deb import aptindex
from tmpl2deb.errors import FormatError, Tmpl2debError, UsageError, os_error
from tmpl2deb.metadata import TemplateMetadata
from tmpl2deb.run import run

if TYPE_CHECKING:
    from debian.deb822 import Deb822

log = logging.getLogger(__name__)

KEYRING = "archive-keyring.gpg"
DISTRIBUTIONS = Path("conf/distributions")
# Architectures a new distribution starts with: the ones Isar's base-apt lists.
ISAR_ARCHITECTURES = ("i386", "armhf", "arm64", "amd64", "mipsel", "riscv64")


def version_compare(a: str, b: str) -> int:
    """Compare two Debian versions as dpkg does: <0, 0 or >0 (python-debian)."""
    from debian.debian_support import version_compare as compare

    return int(compare(a, b))


@dataclass(frozen=True, slots=True)
class Distribution:
    """The settings of one distribution (suite) in conf/distributions."""

    codename: str
    components: tuple[str, ...] = ("main",)
    architectures: tuple[str, ...] = ISAR_ARCHITECTURES
    sign_with: str = ""
    retain: int = 0  # versions of each template kept besides those a template depends on; 0: all

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
        if self.retain:
            lines.append(f"Retain: {self.retain}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_paragraph(cls, para: Deb822) -> Distribution:
        retain = para.get("Retain", "0").strip()
        if not retain.isdigit():
            raise FormatError(f"{DISTRIBUTIONS}: Retain: {retain!r} is not a number of versions")
        return cls(
            para["Codename"],
            tuple(para.get("Components", "main").split()),
            tuple(para.get("Architectures", "").split()),
            para.get("SignWith", ""),
            int(retain),
        )


def read_distributions(repo: Path) -> list[Deb822]:
    from debian.deb822 import Deb822

    path = repo / DISTRIBUTIONS
    try:
        with path.open() as f:
            return list(Deb822.iter_paragraphs(f))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise os_error(err, f"cannot read {path}") from err


def configure(repo: Path, wanted: Distribution, retain: int | None = None) -> Distribution:
    """Create or extend conf/distributions so that WANTED's codename takes our packages; the
    settings that result (other fields and distributions are kept)."""
    from debian.deb822 import Deb822

    paragraphs = read_distributions(repo)
    existing = [p for p in paragraphs if p.get("Codename") == wanted.codename]
    if not existing:
        para = Deb822(wanted.render())
        paragraphs.append(para)
        log.info("Adding distribution %s to %s", wanted.codename, repo)
    else:
        para = existing[0]
        for name, values in (
            ("Architectures", wanted.architectures),
            ("Components", wanted.components),
        ):
            have = para.get(name, "").split()
            para[name] = " ".join(have + [v for v in values if v not in have])
        if wanted.sign_with:
            para["SignWith"] = wanted.sign_with
    if retain is not None:
        para["Retain"] = str(retain)
        if not retain:
            del para["Retain"]
    text = "\n".join(p.dump() for p in paragraphs)
    path = repo / DISTRIBUTIONS
    if not path.exists() or path.read_text() != text:
        aptindex.write_atomic(path, text.encode())
    return Distribution.from_paragraph(para)


def check_key(key: str) -> None:
    try:
        run(["gpg", "--batch", "--list-secret-keys", key], capture=True)
    except Tmpl2debError as err:
        home = os.environ.get("GNUPGHOME", "~/.gnupg")
        raise Tmpl2debError(
            f"no secret key {key!r} in the gpg keyring ({home}) to sign the repository with"
        ) from err


def common_suite(templates: Sequence[TemplateMetadata]) -> str:
    suites = {meta.suite for meta in templates}
    if len(suites) != 1:
        raise UsageError(
            f"the templates are for different suites ({', '.join(sorted(suites))}); "
            "publish them separately or give --codename"
        )
    return suites.pop()


# -- the state of one distribution: its Packages stanzas --------------------------------------


@dataclass(slots=True)
class Contents:
    """The templates of one distribution, as its Packages indices hold them (the Release
    side is aptindex.Suite)."""

    repo: Path
    settings: Distribution
    stanzas: dict[tuple[str, str], list[Deb822]] = field(default_factory=dict)

    def entries(self) -> Iterable[tuple[str, Deb822]]:
        for (component, _), paras in sorted(self.stanzas.items()):
            for para in paras:
                yield component, para

    def find(self, package: str, version: str, arch: str) -> tuple[str, Deb822] | None:
        for component, para in self.entries():
            if (para["Package"], para["Architecture"]) == (package, arch) and (
                version_compare(para["Version"], version) == 0
            ):
                return component, para
        return None

    def drop(self, para: Deb822) -> None:
        for paras in self.stanzas.values():
            if any(p is para for p in paras):
                paras[:] = [p for p in paras if p is not para]

    def add(self, component: str, para: Deb822) -> None:
        self.stanzas.setdefault((component, para["Architecture"]), []).append(para)


def packages_path(repo: Path, codename: str, component: str, arch: str) -> Path:
    return repo / "dists" / codename / component / f"binary-{arch}" / "Packages"


def load(repo: Path, settings: Distribution) -> Contents:
    suite = Contents(repo, settings)
    for component in settings.components:
        for arch in settings.architectures:
            path = packages_path(repo, settings.codename, component, arch)
            for para in aptindex.read_packages(path):
                if not (repo / para["Filename"]).is_file():
                    log.warning(
                        "%s: %s %s has no %s: dropped from the index (repaired)",
                        path, para["Package"], para["Version"], para["Filename"],
                    )  # fmt: skip
                    continue
                if "MD5sum" in para:
                    del para["MD5sum"]  # written by earlier versions; apt hashes what is listed
                if para["Architecture"] == "all" and suite.find(
                    para["Package"], para["Version"], "all"
                ):
                    continue  # in the index of every architecture: once
                suite.add(component, para)
    return suite


def save(suite: Contents) -> None:
    settings = suite.settings
    aptindex.export(
        suite.repo / "dists" / settings.codename,
        aptindex.Suite(settings.codename, settings.components, settings.architectures),
        suite.stanzas,
        sign_with=settings.sign_with,
        date=time.time(),
    )


# -- what a writer finds and leaves -----------------------------------------------------------


def recover(repo: Path) -> None:
    """Remove what a dead writer left: our temporaries, and reprepro's database and lock file
    (a repository an earlier tmpl2deb made with reprepro: the indices are taken over)."""
    for leftover in [*repo.glob(f"pool/**/{aptindex.TMP_PREFIX}*"),
                     *repo.glob(f"dists/**/{aptindex.TMP_PREFIX}*"),
                     *repo.glob(f"conf/{aptindex.TMP_PREFIX}*")]:  # fmt: skip
        log.warning("Removing %s, left by a writer that died", leftover)
        leftover.unlink(missing_ok=True)
    database = repo / "db"
    if database.is_dir():
        if (database / "lockfile").exists():
            log.warning("Removing reprepro's lock file in %s, left by a dead writer", database)
        log.info("Taking over %s from reprepro: its Packages indices are kept, db/ removed", repo)
        shutil.rmtree(database)


def _referenced(repo: Path) -> set[str]:
    """Pool files that a current index, or one kept for readers in flight, names."""
    names: set[str] = set()
    for dist in (repo / "dists").glob("*"):
        paths = [*dist.glob("*/binary-*/Packages"), *aptindex.by_hash_indices(dist)]
        for path in paths:
            names.update(p["Filename"] for p in aptindex.read_packages(path) if "Filename" in p)
    return names


def collect_garbage(repo: Path) -> None:
    keep = _referenced(repo)
    for deb in repo.glob("pool/**/*.deb"):
        if os.fspath(deb.relative_to(repo)) not in keep:
            log.info("Removing %s: no index names it any longer", deb.relative_to(repo))
            deb.unlink()
