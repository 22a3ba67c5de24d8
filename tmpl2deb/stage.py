"""stage: apt-get installs a template package into a staging root with its own apt and dpkg
state, so the host's dpkg database, sources, keys, configuration and cache are never used."""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tmpl2deb.errors import CommandError, FormatError, IntegrityError, MetadataError
from tmpl2deb.metadata import TemplateMetadata, check_package, check_version
from tmpl2deb.run import run
from tmpl2deb.unpack import Template, open_template

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
    """One-line apt source: deb [OPTIONS] URI SUITE [COMPONENT...]."""

    line: str
    options: dict[str, str]
    uri: str
    suite: str
    components: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> Source:
        line = line.strip()
        match = _SOURCE_RE.fullmatch(line)
        if not match or ":" not in match["uri"] or "\n" in line:
            raise FormatError(
                f"bad apt source {line!r}: expected 'deb [OPTIONS] URI SUITE COMPONENT...'"
            )
        options: dict[str, str] = {}
        for item in (match["options"] or "").split():
            key, sep, value = item.partition("=")
            if not sep:
                raise FormatError(f"bad apt source option {item!r} in {line!r}: expected KEY=VALUE")
            options[key] = value
        components = tuple(match["rest"].split())
        if not components and not match["suite"].endswith("/"):
            raise FormatError(f"bad apt source {line!r}: no component (e.g. main)")
        return cls(line, options, match["uri"], match["suite"], components)

    def with_options(self, **changes: str) -> Source:
        """The same source with some options replaced (e.g. signed-by inside a chroot)."""
        options = {**self.options, **changes}
        opts = " ".join(f"{k}={v}" for k, v in options.items())
        parts = ["deb", f"[{opts}]" if opts else "", self.uri, self.suite, *self.components]
        return Source.parse(" ".join(p for p in parts if p))


def parse_spec(spec: str) -> tuple[str, str]:
    """PACKAGE or PACKAGE=VERSION."""
    package, _sep, version = spec.partition("=")
    check_package(package)
    if version:
        check_version(version)
    return package, version


def host_architecture() -> str:
    return run(["dpkg", "--print-architecture"], capture=True).stdout.strip()


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
    # would otherwise look unchanged to apt's If-Modified-Since, and they are small.
    for entry in (staging / "var/lib/apt/lists").iterdir():
        if entry.is_file():
            entry.unlink()
    if architecture != host_architecture():
        run(["dpkg", f"--root={staging}", "--add-architecture", architecture])


def _check_staging(staging: Path) -> None:
    try:
        resolved = staging.resolve()
    except OSError as err:
        raise FormatError(f"bad staging directory {staging}: {err.strerror}") from err
    if resolved == Path("/"):
        raise FormatError("the staging root cannot be / (stage never touches the host's dpkg)")
    if staging.exists() and not staging.is_dir():
        raise FormatError(f"{staging} exists and is not a directory")
    if not resolved.parent.is_dir():
        raise FormatError(f"parent directory {resolved.parent} does not exist")


def apt(staging: Path, *args: str) -> str:
    """Run an apt tool with the staging root's configuration only (APT_CONFIG); its output."""
    env = {
        "APT_CONFIG": os.fspath((staging / APT_CONF).resolve()),
        "DEBIAN_FRONTEND": "noninteractive",
    }
    out = run(args, env=env, capture=True).stdout
    log.debug("%s", out.rstrip())
    return out


def candidate(staging: Path, package: str, version: str) -> TemplateMetadata:
    """The template metadata of PACKAGE[=VERSION] from the staging root's package lists."""
    from debian.deb822 import Deb822

    spec = f"{package}={version}" if version else package
    try:
        text = apt(staging, "apt-cache", "show", "--no-all-versions", spec)
    except CommandError as err:
        raise FormatError(f"{spec} is not in the configured source ({err})") from err
    if not text.strip():
        raise FormatError(f"{spec} is not in the configured source (no such version)")
    para = Deb822(text)
    if "Template-Format" not in para:
        raise FormatError(f"{package} {para.get('Version', '')} is not a tmpl2deb template")
    try:
        return TemplateMetadata.from_control(para)
    except MetadataError as err:
        raise FormatError(
            f"{package} {para.get('Version', '')}: bad template fields ({err})"
        ) from err


def stage(
    source: str,
    spec: str,
    staging: Path,
    *,
    architecture: str = "",
) -> Template:
    """Install template PACKAGE[=VERSION] from SOURCE into STAGING; return the verified template."""
    apt_source = Source.parse(source)
    package, version = parse_spec(spec)
    _check_staging(staging)
    architecture = architecture or host_architecture()
    created = not staging.exists()
    try:
        staging.mkdir(exist_ok=True)
        prepare(staging, architecture)
        (staging / SOURCES).write_text(apt_source.line + "\n")
        log.info("Updating the package lists of %s from %s", staging, apt_source.uri)
        apt(staging, "apt-get", "update", "--error-on=any", "-q")
        wanted = candidate(staging, package, version)
        log.info("Installing %s %s into %s", package, wanted.version, staging)
        apt(
            staging,
            "apt-get",
            "install",
            "--yes",
            "-q",
            "--allow-downgrades",
            f"{package}={wanted.version}",
        )
        template = open_template(staging, package)
    except BaseException:
        if created:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if template.metadata != wanted:
        raise IntegrityError(
            f"the installed {package} does not match the fields of the package index; "
            "the repository or the staging root was altered"
        )
    return template
