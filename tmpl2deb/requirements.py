"""What tmpl2deb needs on the host, by Debian package: python3 -m tmpl2deb.requirements TOOL...

Imports nothing but the standard library, so that it answers where tmpl2deb itself cannot
start (the Isar classes ask it when bitbake parses a recipe). Prints the Debian packages that
are missing for the tools named and for tmpl2deb's Python modules, one line, and exits 1; prints
nothing and exits 0 when the host has everything.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterable, Sequence

# The Debian package that provides each tool tmpl2deb calls.
TOOL_PACKAGES = {
    "tar": "tar",
    "zstd": "zstd",
    "gzip": "gzip",
    "xz": "xz-utils",
    "dpkg-deb": "dpkg",
    "dpkg": "dpkg",
    "apt-get": "apt",
    "gpgv": "gpgv",
    "reprepro": "reprepro",
    "gpg": "gpg",
    "mmdebstrap": "mmdebstrap",
}
# tmpl2deb's Python modules beyond the standard library
MODULE_PACKAGES = {"debian": "python3-debian", "arpy": "python3-arpy"}


def tool_package(name: str) -> str:
    return TOOL_PACKAGES.get(name, name)


def missing(tools: Iterable[str]) -> list[str]:
    """The Debian packages to install for the tools and for tmpl2deb's modules, in order."""
    packages = [tool_package(tool) for tool in tools if shutil.which(tool) is None]
    packages += [pkg for module, pkg in MODULE_PACKAGES.items() if not _importable(module)]
    return list(dict.fromkeys(packages))


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def main(argv: Sequence[str]) -> int:
    packages = missing(argv)
    if packages:
        sys.stdout.write(" ".join(packages) + "\n")
    return 1 if packages else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
