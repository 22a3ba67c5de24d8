"""stage: apt-get downloads a template package (and the parents a delta needs) into a staging
root with its own apt state, so the host's dpkg database, sources, keys, configuration and cache
are never used. Nothing of the package runs and dpkg never unpacks it: apt resolves and
verifies the chain against the signed index, tmpl2deb checks each .deb is a template and unpack
reads the payload where apt put it (STAGING/var/cache/apt/archives)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tmpl2deb.errors import (
    CommandError,
    FormatError,
    InputError,
    IntegrityError,
    MetadataError,
    UsageError,
    os_error,
)
from tmpl2deb.metadata import TemplateMetadata, check_package, check_version
from tmpl2deb.run import host_architecture, run, show_progress
from tmpl2deb.template import (
    ARCHIVES,
    Expect,
    Template,
    check_match,
    open_template,
    record_verified,
    verified_sha256,
)

log = logging.getLogger(__name__)

APT_CONF = Path("etc/apt/apt.conf")
SOURCES = Path("etc/apt/sources.list.d/tmpl2deb.list")
_DIRS = (
    "etc/apt/apt.conf.d",
    "etc/apt/preferences.d",
    "etc/apt/sources.list.d",
    "etc/apt/trusted.gpg.d",
    "var/lib/apt/lists/partial",
    "var/cache/apt/archives/partial",
    "var/lib/dpkg/info",
    "var/lib/dpkg/updates",
    "var/log/apt",
)
_SOURCE_RE = re.compile(
    r"deb(?:\s+\[(?P<options>[^\]]*)\])?\s+(?P<uri>\S+)\s+(?P<suite>\S+)(?P<rest>.*)"
)


@dataclass(frozen=True, slots=True)
class Source:
    """One apt source, as the one-line form deb [OPTIONS] URI SUITE [COMPONENT...]."""

    line: str
    options: dict[str, str]
    uri: str
    suite: str
    components: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Source:
        """Exactly one source: a one-line 'deb ...' or a deb822 stanza (.sources format)."""
        sources = cls.parse_all(text)
        if len(sources) != 1:
            raise UsageError(
                f"{len(sources)} apt sources in {text.strip()!r}; give exactly one (one URI, "
                "one suite, Types: deb)"
            )
        return sources[0]

    @classmethod
    def parse_all(cls, text: str) -> list[Source]:
        """The sources of a one-line 'deb ...', or of deb822 stanzas, as apt's .sources
        files have them (Types, URIs, Suites, Components, Signed-By, Trusted, Architectures,
        Enabled; every URI and suite of a stanza is a source, deb-src ones are left out)."""
        if _DEB822_FIELD.search(text):
            return [cls._parse_line(line) for line in _deb822_lines(text)]
        return [cls._parse_line(text)]

    @classmethod
    def _parse_line(cls, line: str) -> Source:
        line = line.strip()
        match = _SOURCE_RE.fullmatch(line)
        if not match or ":" not in match["uri"] or "\n" in line:
            raise UsageError(
                f"bad apt source {line!r}: expected 'deb [OPTIONS] URI SUITE COMPONENT...'"
            )
        options: dict[str, str] = {}
        for item in (match["options"] or "").split():
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"bad apt source option {item!r} in {line!r}: expected KEY=VALUE")
            options[key] = value
        components = tuple(match["rest"].split())
        if not components and not match["suite"].endswith("/"):
            raise UsageError(f"bad apt source {line!r}: no component (e.g. main)")
        return cls(line, options, match["uri"], match["suite"], components)

    def with_options(self, **changes: str) -> Source:
        """The same source with some options replaced (e.g. signed-by inside a chroot)."""
        options = {**self.options, **changes}
        opts = " ".join(f"{k}={v}" for k, v in options.items())
        parts = ["deb", f"[{opts}]" if opts else "", self.uri, self.suite, *self.components]
        return Source._parse_line(" ".join(p for p in parts if p))


_DEB822_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:(\s|$)", re.MULTILINE)
# deb822 fields and the one-line option each becomes
_DEB822_OPTIONS = {"signed-by": "signed-by", "trusted": "trusted", "architectures": "arch"}


def _deb822_lines(text: str) -> list[str]:
    """The one-line form of every source in deb822 stanzas."""
    from debian.deb822 import Deb822

    lines = []
    for para in Deb822.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False):
        fields = {key.lower(): value.strip() for key, value in para.items()}
        unknown = set(fields) - {"types", "uris", "suites", "components", "enabled",
                                 *_DEB822_OPTIONS}  # fmt: skip
        if unknown:
            known = ", ".join(sorted(unknown))
            raise UsageError(f"apt source stanza has fields tmpl2deb does not know: {known}")
        if (
            fields.get("enabled", "yes").lower() == "no"
            or "deb" not in fields.get("types", "").split()
        ):
            continue
        if "\n" in fields.get("signed-by", "") or "BEGIN PGP" in fields.get("signed-by", ""):
            raise UsageError("an apt source with its key in Signed-By is not supported: give "
                              "the path of the keyring")  # fmt: skip
        options = [f"{_DEB822_OPTIONS[key]}={','.join(fields[key].split())}"
                   for key in _DEB822_OPTIONS if key in fields]  # fmt: skip
        opts = f"[{' '.join(options)}] " if options else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                lines.append(f"deb {opts}{uri} {suite} {fields.get('components', '')}".strip())
    return lines


# Debian's relation operators, on the result of a version comparison
_OPERATORS: dict[str, Callable[[int], bool]] = {
    "<<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    "=": lambda c: c == 0,
    ">=": lambda c: c >= 0,
    ">>": lambda c: c > 0,
}


@dataclass(frozen=True, slots=True)
class Spec:
    """PACKAGE, PACKAGE=VERSION, or PACKAGE (OP VERSION) as in a Depends field."""

    package: str
    version: str = ""
    op: str = ""
    bound: str = ""

    @classmethod
    def parse(cls, spec: str) -> Spec:
        """PACKAGE=VERSION (as apt-get takes it), or one relation as in a Depends field,
        parsed by python-debian: PACKAGE or PACKAGE (OP VERSION)."""
        from debian.deb822 import PkgRelation

        text = spec.strip()
        bad = FormatError(
            f"bad template {spec!r}: expected PACKAGE, PACKAGE=VERSION or PACKAGE (>= VERSION)"
        )
        name, equals, version = text.partition("=")
        if equals and "(" not in name:
            check_package(name.strip())
            check_version(version.strip())
            return cls(name.strip(), version.strip())
        package = text.partition("(")[0].strip()
        check_package(package)
        # what python-debian cannot parse it returns raw, with a warning of its own
        quiet = logging.getLogger("debian.deb822")
        was, quiet.disabled = quiet.disabled, True
        try:
            relations = PkgRelation.parse_relations(text)
        finally:
            quiet.disabled = was
        if len(relations) != 1 or len(relations[0]) != 1:
            raise bad
        relation = relations[0][0]
        if relation["name"] != package or relation["arch"] or relation["archqual"]:
            raise bad
        if relation["restrictions"]:
            raise bad
        op, bound = relation["version"] or ("", "")
        if op and op not in _OPERATORS:
            raise bad
        if bound:
            check_version(bound)
        return cls(relation["name"], op=op, bound=bound)

    def satisfied_by(self, version: str) -> bool:
        from debian.debian_support import version_compare

        if self.version:
            return version_compare(version, self.version) == 0
        if not self.op:
            return True
        return _OPERATORS[self.op](version_compare(version, self.bound))

    def __str__(self) -> str:
        if self.version:
            return f"{self.package}={self.version}"
        return f"{self.package} ({self.op} {self.bound})" if self.op else self.package


def apt_config(staging: Path, architecture: str) -> str:
    """apt.conf of a staging root: every directory, the status file and dpkg's root in it."""
    root = os.fspath(staging.resolve())
    return f"""\
// Written by tmpl2deb stage: apt and dpkg state of this staging root only.
Dir "{root}/";
Dir::State::status "{root}/var/lib/dpkg/status";
APT::Architecture "{architecture}";
APT::Architectures {{ "{architecture}"; }};
APT::Install-Recommends "false";
APT::Keep-Downloaded-Packages "false";
Acquire::Languages "none";
// unsafe-io: no fsync per file; unpack verifies the payload sha256 anyway
DPkg::Options {{ "--root={root}"; "--log={root}/var/log/dpkg.log"; "--force-unsafe-io"; }};
"""


def prepare(staging: Path, architecture: str) -> None:
    """Create the staging root's directories, empty dpkg status and apt.conf."""
    for name in _DIRS:
        (staging / name).mkdir(parents=True, exist_ok=True)
    for name in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        (staging / name).touch(exist_ok=True)
    (staging / APT_CONF).write_text(apt_config(staging, architecture))
    # Fetch the indices afresh every time: a repository republished within the same second
    # would otherwise look unchanged to apt's If-Modified-Since, and they are small. The
    # .debs stay: stage fetches again only what the index now names differently.
    for entry in (staging / "var/lib/apt/lists").iterdir():
        if entry.is_file():
            entry.unlink()
    if architecture != host_architecture():
        run(["dpkg", f"--root={staging}", "--add-architecture", architecture])


def _check_staging(staging: Path) -> None:
    try:
        resolved = staging.resolve()
    except OSError as err:
        raise os_error(err, f"bad staging directory {staging}") from err
    if resolved == Path("/"):
        raise UsageError("the staging root cannot be / (stage never touches the host's dpkg)")
    if staging.exists() and not staging.is_dir():
        raise InputError(f"{staging} exists and is not a directory")
    if not resolved.parent.is_dir():
        raise InputError(f"parent directory {resolved.parent} does not exist")


def apt(staging: Path, *args: str, cwd: Path | None = None, show: bool = False) -> str:
    """Run an apt tool with the staging root's configuration only (APT_CONFIG); its output
    (with show: none, it went to stderr as apt's progress)."""
    env = {
        "APT_CONFIG": os.fspath((staging / APT_CONF).resolve()),
        "DEBIAN_FRONTEND": "noninteractive",
    }
    out = run(args, env=env, cwd=cwd, capture=not show, show=show).stdout or ""
    log.debug("%s", out.rstrip())
    return out


@dataclass(frozen=True, slots=True)
class Resolved:
    """One template version of a repository, as its signed index describes it."""

    metadata: TemplateMetadata
    sha256: str  # of the .deb

    def line(self) -> str:
        """PACKAGE VERSION DEB_SHA256 ROOTFS_SHA256, as `tmpl2deb resolve` prints it."""
        meta = self.metadata
        return f"{meta.package} {meta.version} {self.sha256} {meta.rootfs_sha256}"


def versions(root: Path, package: str) -> list[Resolved]:
    """Every version of template PACKAGE in the package lists of the apt root ROOT."""
    from debian.deb822 import Deb822

    try:
        text = apt(root, "apt-cache", "show", package)
    except CommandError as err:
        raise InputError(f"{package} is not in the configured source ({err})") from err
    found = []
    for para in Deb822.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False):
        version = para.get("Version", "")
        if "Template-Format" not in para:
            raise FormatError(f"{package} {version} is not a tmpl2deb template")
        try:
            found.append(Resolved(TemplateMetadata.from_control(para), para.get("SHA256", "")))
        except MetadataError as err:
            raise FormatError(f"{package} {version}: bad template fields ({err})") from err
    return found


def choose(root: Path, spec: Spec) -> Resolved:
    """The newest version of spec.package in ROOT's package lists that satisfies SPEC."""
    from debian.debian_support import Version

    found = versions(root, spec.package)
    fitting = [r for r in found if spec.satisfied_by(r.metadata.version)]
    if not fitting:
        have = ", ".join(sorted({r.metadata.version for r in found})) or "none"
        raise InputError(f"no version of {spec.package} satisfies {spec} (the source has {have})")
    return max(fitting, key=lambda r: Version(r.metadata.version))


def chain(root: Path, wanted: Resolved) -> list[Resolved]:
    """WANTED and the exact parent versions its delta chain needs, from ROOT's package lists."""
    found = [wanted]
    while found[-1].metadata.delta:
        package, version = found[-1].metadata.parent_spec()
        if len(found) > 64 or any(r.metadata.package == package for r in found):
            raise FormatError(f"the template chain of {wanted.metadata.package} has a cycle")
        found.append(choose(root, Spec(package, version)))
    return found


def download_argv(templates: list[Resolved], quiet: bool = True) -> list[str]:
    """apt-get fetches exactly these versions (checked against the signed index) into the
    current directory; nothing is installed, no dpkg runs."""
    specs = [f"{r.metadata.package}={r.metadata.version}" for r in templates]
    return ["apt-get", "download", *(["-q"] if quiet else []), *specs]


def apt_file_name(resolved: Resolved) -> str:
    """The name apt-get download gives the .deb (an epoch's colon escaped)."""
    meta = resolved.metadata
    return f"{meta.package}_{meta.version.replace(':', '%3a')}_{meta.architecture}.deb"


def _fetch(staging: Path, needed: list[Resolved], offline: bool = False) -> None:
    """Have exactly the .debs of NEEDED in the staging root's archives: those apt checked
    before against the sha256 the signed index names now stay, the others are downloaded
    (offline: there must be none)."""
    archives = staging / ARCHIVES
    wanted = {apt_file_name(r): r for r in needed}
    have = verified_sha256(staging)
    for path in archives.glob("*.deb"):
        index = wanted[path.name].sha256 if path.name in wanted else ""
        if not index or have.get(path.name) != index:
            path.unlink()
    kept = [r for name, r in wanted.items() if (archives / name).exists()]
    fetch = [r for r in needed if r not in kept]
    if kept:
        log.info("Already staged, as the signed index names them: %s", _names(kept))
    if fetch and offline:
        raise InputError(
            f"offline, and {_names(fetch)} is not staged in {staging}: stage it once with the "
            "network"
        )
    if fetch:
        log.info("Downloading %s into %s", _names(fetch), staging)
        # apt's own progress (a live line on a terminal) unless --quiet
        show = show_progress()
        apt(staging, *download_argv(fetch, quiet=not show), cwd=archives, show=show)
    record_verified(staging, {name: r.sha256 for name, r in wanted.items()})


def _check_offline(staging: Path, source: Source) -> None:
    """The staging root was staged from SOURCE before: its lists are that source's."""
    try:
        line = (staging / SOURCES).read_text().strip()
    except FileNotFoundError:
        line = ""
    if line != source.line:
        raise InputError(
            f"offline, and {staging} was not staged from {source.line!r} before: stage it once "
            "with the network"
        )
    log.info("Offline: the package lists of %s as staged before", staging)


def _names(templates: list[Resolved]) -> str:
    return ", ".join(f"{r.metadata.package} {r.metadata.version}" for r in templates)


def stage(
    source: str,
    spec: str,
    staging: Path,
    *,
    architecture: str = "",
    expect: Expect | None = None,
    offline: bool = False,
) -> Template:
    """Download template SPEC (and its parents) from SOURCE into STAGING; return the verified
    template (every .deb staged is checked to be a template before anything reads it).
    Offline: no apt-get update, the lists of the last stage from SOURCE (apt checked them
    against the signed index then) pick the template, which must be staged already."""
    apt_source = Source.parse(source)
    wanted_spec = Spec.parse(spec)
    package = wanted_spec.package
    _check_staging(staging)
    architecture = architecture or host_architecture()
    expect = expect or Expect()
    created = not staging.exists()
    try:
        if offline:
            _check_offline(staging, apt_source)
        else:
            staging.mkdir(exist_ok=True)
            prepare(staging, architecture)
            (staging / SOURCES).write_text(apt_source.line + "\n")
            log.info("Updating the package lists of %s from %s", staging, apt_source.uri)
            apt(staging, "apt-get", "update", "--error-on=any", "-q")
        resolved = choose(staging, wanted_spec)
        wanted = resolved.metadata
        check_match(wanted, replace(expect, architecture=expect.architecture or architecture))
        needed = chain(staging, resolved)
        _fetch(staging, needed, offline)
        template = open_template(staging, package)
    except BaseException:
        if created:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if template.metadata != wanted:
        raise IntegrityError(
            f"the staged {package} does not match the fields of the package index; "
            "the repository or the staging root was altered"
        )
    return template
