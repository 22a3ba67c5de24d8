"""resolve: which template an apt source holds for a spec, read from its signed index by apt.

The identity printed (package, version, the .deb's sha256 from the signed Packages index, the
rootfs sha256) is what an Isar image puts in its task signature, as bitbake does with the
revision that SRCREV = "${AUTOREV}" resolves: a new release, or other content republished
under the same version, changes it; a pinned version does not.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tmpl2deb.errors import CommandError, FormatError
from tmpl2deb.run import host_architecture
from tmpl2deb.stage import SOURCES, Resolved, Source, Spec, apt, choose, prepare

log = logging.getLogger(__name__)


def resolve(source: str, spec: str, architecture: str = "") -> Resolved:
    """The template SPEC resolves to in SOURCE (apt-get update into a throw-away root)."""
    apt_source = Source.parse(source)
    wanted = Spec.parse(spec)
    with tempfile.TemporaryDirectory(prefix="tmpl2deb-resolve-") as tmp:
        root = Path(tmp)
        prepare(root, architecture or host_architecture())
        (root / SOURCES).write_text(apt_source.line + "\n")
        log.info("Reading the package lists of %s", apt_source.uri)
        try:
            apt(root, "apt-get", "update", "--error-on=any", "-q")
        except CommandError as err:
            uri = apt_source.uri
            raise FormatError(f"cannot read the template repository {uri}: {err}") from err
        return choose(root, wanted)
