"""tmpl2deb(1), rendered from the argparse parser so that it always matches --help.

python3 -m tmpl2deb.manpage > tmpl2deb.1   (the date is SOURCE_DATE_EPOCH's, else today's)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tmpl2deb import __version__
from tmpl2deb.cli import build_parser, source_date_epoch

_DESCRIPTION = """\
tmpl2deb makes image templates: a finished root filesystem becomes an ordinary Debian package
whose control fields carry the image's metadata and whose data holds the rootfs as a zstd tar
with every owner, mode, xattr, capability, ACL, device and hard link. Templates travel through an
apt repository laid out like Isar's base-apt that keeps every release; consumers fetch them with
apt-get into a staging root (never the host, no code of the package runs), unpack the rootfs and
build on top of it instead of bootstrapping from scratch.
Host leaks (apt sources, resolv.conf, hosts, proxy settings, machine-id, logs) are left out of
every template.

Results (paths, package names) go to standard output, progress and errors to standard error.
Options are given after the command; every default is shown with its option."""

_ENVIRONMENT = [
    (
        "SOURCE_DATE_EPOCH",
        "Build date of a template (pack, derive): recorded in Template-Build-Date, used for the "
        "default version, and file modification times newer than it are clamped to it. "
        "Default: the current time.",
    ),
    ("GNUPGHOME", "The gpg keyring publish --sign-with signs with (default: ~/.gnupg)."),
    (
        "http_proxy, https_proxy, no_proxy",
        "Passed on to apt-get (stage, derive), which otherwise gets a minimal environment.",
    ),
]

_FILES = [
    (
        "/usr/share/tmpl2deb/templates/PACKAGE/rootfs.tar.zst",
        "The rootfs payload of a template package (pax tar, zstd).",
    ),
    (
        "/usr/share/tmpl2deb/templates/PACKAGE/rootfs.tardelta.zst",
        "The payload of a delta template: a tar delta against its parent's rootfs tar, zstd.",
    ),
    (
        "ROOTFS/var/lib/tmpl2deb/initrd-inputs.json",
        "What the initrds in ROOTFS/boot were made from (tmpl2deb initrd record).",
    ),
    (
        "/usr/share/tmpl2deb/templates/PACKAGE/metadata.json",
        "The template's metadata as JSON (tmpl2deb info --json).",
    ),
    (
        "/usr/share/tmpl2deb/templates/PACKAGE/manifest",
        "The dpkg packages of the rootfs, one 'name version architecture' per line.",
    ),
    (
        "STAGING/etc/apt/apt.conf",
        "The apt configuration of a staging root, written by stage; "
        "APT_CONFIG=STAGING/etc/apt/apt.conf apt-cache show PACKAGE queries it.",
    ),
    (
        "STAGING/var/cache/apt/archives/*.deb",
        "The template and its parents as apt downloaded them; unpack reads them there.",
    ),
    (
        "REPO/conf/distributions",
        "The settings of the repository's distributions (reprepro's format; SignWith, Retain) "
        "that publish writes and extends.",
    ),
    ("REPO/.tmpl2deb.lock", "The writers' lock (flock); a writer waits for it."),
    ("REPO/archive-keyring.gpg", "The public key of a signed repository, for signed-by=."),
]


_OUTPUT_CONTROL = ("verbose", "quiet", "debug")  # every command has them: one section


def _escape(text: str) -> str:
    """Plain text for roff: backslashes, hyphens and lines starting with . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"\\fB{_escape(s)}\\fR" for s in action.option_strings)
        if action.nargs == 0:
            return names
        metavar = action.metavar or action.dest.upper()
        return f"{names} \\fI{_escape(str(metavar))}\\fR"
    return f"\\fI{_escape(str(action.metavar or action.dest))}\\fR"


def _command(name: str, sub: argparse.ArgumentParser) -> list[str]:
    usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
    lines = [f'.SS "{name}"', f"\\fB{_escape(usage)}\\fR", ".PP", _escape(sub.description or "")]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in _OUTPUT_CONTROL:
            continue
        lines += [".TP", _option(action), _escape(" ".join((action.help or "").split()))]
    example = (sub.epilog or "").split("\n\n")[0].removeprefix("example:\n").strip()
    if example:
        lines += [".PP", "Example:", ".RS", ".nf", _escape(example), ".fi", ".RE"]
    return lines


def render(parser: argparse.ArgumentParser | None = None, epoch: int | None = None) -> str:
    """The man page tmpl2deb(1) in roff (man macros)."""
    parser = parser or build_parser()
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch if epoch is not None else time.time()))
    commands = _subparsers(parser)
    lines = [
        f'.TH TMPL2DEB 1 "{date}" "tmpl2deb {__version__}" "User Commands"',
        ".SH NAME",
        "tmpl2deb \\- image templates as Debian packages",
        ".SH SYNOPSIS",
    ]
    for name in commands:
        lines += [".br", f"\\fBtmpl2deb {name}\\fR [\\fIOPTIONS\\fR] ..."]
    lines += [".br", "\\fBtmpl2deb \\-\\-version\\fR", ".SH DESCRIPTION"]
    for paragraph in _DESCRIPTION.split("\n\n"):
        lines += [".PP", _escape(" ".join(paragraph.split()))]
    lines += [".SH COMMANDS"]
    for name, sub in commands.items():
        lines += _command(name, sub)
    lines += [".SH OUTPUT CONTROL", "Every command takes these options:"]
    first = next(iter(commands.values()))
    for action in first._actions:
        if action.dest in _OUTPUT_CONTROL:
            lines += [".TP", _option(action), _escape(action.help or "")]
    lines += [".SH EXIT STATUS"]
    for line in (parser.epilog or "").splitlines()[1:]:
        code, _sep, meaning = line.strip().partition(" ")
        lines += [".TP", f"\\fB{code}\\fR", _escape(meaning.strip())]
    lines += [".SH ENVIRONMENT"]
    for name, text in _ENVIRONMENT:
        lines += [".TP", f"\\fB{_escape(name)}\\fR", _escape(text)]
    lines += [".SH FILES"]
    for name, text in _FILES:
        lines += [".TP", f"\\fI{_escape(name)}\\fR", _escape(text)]
    lines += [
        ".SH SEE ALSO",
        "\\fBdpkg\\-deb\\fR(1), \\fBapt\\-get\\fR(8), \\fBreprepro\\fR(1), \\fBmmdebstrap\\fR(1), "
        "\\fBtar\\fR(1), \\fBzstd\\fR(1); /usr/share/doc/tmpl2deb/README.md.gz",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    epoch = source_date_epoch(os.environ) if "SOURCE_DATE_EPOCH" in os.environ else None
    sys.stdout.write(render(epoch=epoch))
