"""initrd: record what the initrds of a rootfs were made from, or what of it changed."""

from __future__ import annotations

from pathlib import Path

from tmpl2deb.commands.common import Args, Subparsers, key_value, subcommand


class InitrdArgs(Args):
    action: str
    rootfs: Path
    context: list[str]


def run_initrd(args: InitrdArgs) -> None:
    from tmpl2deb import initrd

    context = dict(key_value(item) for item in args.context)
    path = args.rootfs / initrd.RECORD
    if args.action == "record":
        initrd.write_record(path, initrd.record(args.rootfs, context))
        print(path)
        return
    old = initrd.read_record(path)
    for change in initrd.changes(args.rootfs, context, old) if old else [f"no record {path}"]:
        print(change)


def add_initrd(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "initrd",
        "Record what the initrds in a rootfs' /boot were made from (record), or print what of "
        "it changed since, one input per line, nothing when the initrd can be reused (check).",
        "tmpl2deb initrd check /srv/rootfs --context 'cmdline=update-initramfs -u -k all'",
    )
    p.add_argument("action", choices=("record", "check"), help="record, or check against it")
    p.add_argument(
        "rootfs", type=Path, metavar="ROOTFS", help="the root filesystem (record: var/lib/tmpl2deb)"
    )
    p.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what else decides the initrd, e.g. the generator's command line (repeatable; "
        "default: none)",
    )
    p.set_defaults(func=run_initrd)
