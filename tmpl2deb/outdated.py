"""outdated: which packages of a template apt sources have newer versions of, by apt's own
upgrade simulation against the template's manifest (no rootfs unpacked, no root needed)."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tmpl2deb.errors import FormatError
from tmpl2deb.rootfs import parse_manifest
from tmpl2deb.run import host_architecture, run
from tmpl2deb.stage import SOURCES, Source, apt, prepare
from tmpl2deb.template import Template

log = logging.getLogger(__name__)

# apt-get --simulate: "Inst libc6 [2.36-9+deb12u7] (2.36-9+deb12u9 Debian:12.9/stable [amd64])"
_UPGRADE = re.compile(
    r"^Inst (?P<name>\S+) \[(?P<old>[^\]]+)\] \((?P<new>\S+) .*?\[(?P<arch>[^\]]+)\]"
)


@dataclass(frozen=True, slots=True)
class Newer:
    name: str
    architecture: str
    version: str  # in the template
    candidate: str  # in the sources


def outdated(template: Template, sources: Sequence[str]) -> list[Newer]:
    """The template's packages that `apt-get dist-upgrade` would upgrade from SOURCES."""
    lines = [Source.parse(line) for line in sources]
    if not lines:
        raise FormatError("give the apt sources to compare with (--source)")
    native = template.metadata.architecture
    packages = parse_manifest(template.manifest)
    with tempfile.TemporaryDirectory(prefix="tmpl2deb-outdated-") as tmp:
        root = Path(tmp)
        prepare(root, native)
        for arch in sorted({a for _, _, a in packages} - {native, "all", host_architecture()}):
            run(["dpkg", f"--root={root}", "--add-architecture", arch])
        (root / SOURCES).write_text("".join(source.line + "\n" for source in lines))
        (root / "var/lib/dpkg/status").write_text(_status(packages))
        log.info("Updating the package lists from %s", ", ".join(s.uri for s in lines))
        apt(root, "apt-get", "update", "--error-on=any", "-q")
        plan = apt(root, "apt-get", "dist-upgrade", "--simulate", "-q", "-o", "Debug::NoLocking=1")
    newer = []
    for line in plan.splitlines():
        match = _UPGRADE.match(line)
        # the manifest has no dependency fields, so apt sees each record as another build of
        # the same version and plans a reinstall: only a version change counts
        if match and match["old"] != match["new"]:
            name = match["name"].partition(":")[0]
            newer.append(Newer(name, match["arch"], match["old"], match["new"]))
    return sorted(newer, key=lambda n: (n.name, n.architecture))


def _status(packages: list[tuple[str, str, str]]) -> str:
    """A dpkg status with the template's packages installed; a name installed for several
    architectures is Multi-Arch: same, as it must have been."""
    count: dict[str, int] = {}
    for name, _, _ in packages:
        count[name] = count.get(name, 0) + 1
    return "".join(
        f"Package: {name}\nStatus: install ok installed\nVersion: {version}\n"
        f"Architecture: {arch}\n" + ("Multi-Arch: same\n" if count[name] > 1 else "") + "\n"
        for name, version, arch in packages
    )
