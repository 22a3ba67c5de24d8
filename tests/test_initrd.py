"""initrd inputs: the initramfs member list (real cpio, zstd) and what counts as a change."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, needs_tool
from tmpl2deb import initrd
from tmpl2deb.errors import FormatError

pytestmark = pytest.mark.integration

KVER = "6.1.0-9-amd64"
CONTEXT = {"cmdline": 'update-initramfs -u -v -k "$kernel_version"', "epoch": "1709565251"}


def _cpio(root: Path, names: list[str]) -> bytes:
    listing = "".join(f"{n}\n" for n in names).encode()
    result = subprocess.run(
        ["cpio", "--create", "--format=newc", "--quiet"],
        input=listing, cwd=root, capture_output=True, check=True,
    )  # fmt: skip
    return result.stdout


def make_rootfs(root: Path) -> Path:
    """A rootfs with a kernel, initramfs-tools' trees, dpkg state and an initrd in /boot that
    holds an early (plain) cpio archive and a zstd-compressed main one, as mkinitramfs makes."""
    needs_tool("cpio", "zstd")
    files = {
        f"boot/vmlinuz-{KVER}": "kernel",
        f"boot/config-{KVER}": "CONFIG_RD_ZSTD=y\n",
        f"usr/lib/modules/{KVER}/kernel/drivers/a.ko": "module a",
        f"usr/lib/modules/{KVER}/modules.dep": "",
        "usr/lib/firmware/amd-ucode/microcode.bin": "ucode",
        "etc/initramfs-tools/initramfs.conf": "MODULES=most\nCOMPRESS=zstd\n",
        "usr/share/initramfs-tools/hooks/udev": "#!/bin/sh\n",
        "usr/bin/kmod": "kmod binary",
        "usr/bin/hello": "not in the initrd",
        "etc/ld.so.cache": "the rootfs' cache",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/modprobe").symlink_to("../bin/kmod")
    (root / "lib").symlink_to("usr/lib")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "kmod.list").write_text("/usr\n/usr/bin\n/usr/bin/kmod\n/usr/sbin/modprobe\n")
    (info / "hello.list").write_text("/usr\n/usr/bin\n/usr/bin/hello\n")
    (root / "var/lib/dpkg/status").write_text(
        "Package: kmod\nStatus: install ok installed\nVersion: 30-1\n\n"
        "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\n"
    )
    early = root.parent / "early"
    (early / "kernel/x86/microcode").mkdir(parents=True)
    (early / "kernel/x86/microcode/AuthenticAMD.bin").write_text("ucode")
    main = root.parent / "main"
    for name in ("usr/bin/kmod", "usr/lib/modules/" + KVER + "/kernel/drivers/a.ko"):
        (main / name).parent.mkdir(parents=True, exist_ok=True)
        (main / name).write_text((root / name).read_text())
    (main / "usr/sbin").mkdir()
    (main / "usr/sbin/modprobe").symlink_to("../bin/kmod")
    (main / "init").write_text("#!/bin/sh\n")
    (main / "etc").mkdir()
    (main / "etc/ld.so.cache").write_text("made by ldconfig -r in the initrd")
    early_cpio = _cpio(early, ["kernel", "kernel/x86", "kernel/x86/microcode",
                               "kernel/x86/microcode/AuthenticAMD.bin"])  # fmt: skip
    main_names = [".", "init", "usr", "usr/lib", "usr/lib/modules", f"usr/lib/modules/{KVER}",
                  f"usr/lib/modules/{KVER}/kernel", f"usr/lib/modules/{KVER}/kernel/drivers",
                  f"usr/lib/modules/{KVER}/kernel/drivers/a.ko", "usr/bin", "usr/bin/kmod",
                  "usr/sbin", "usr/sbin/modprobe", "etc", "etc/ld.so.cache"]  # fmt: skip
    compressed = subprocess.run(
        ["zstd", "-q", "-c"], input=_cpio(main, main_names), capture_output=True, check=True
    ).stdout
    (root / f"boot/initrd.img-{KVER}").write_bytes(early_cpio + compressed)
    return root


def test_members_of_an_early_and_a_compressed_archive(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    names = initrd.cpio_names(root / f"boot/initrd.img-{KVER}")
    assert names[:4] == ["kernel", "kernel/x86", "kernel/x86/microcode",
                         "kernel/x86/microcode/AuthenticAMD.bin"]  # fmt: skip
    assert "usr/bin/kmod" in names and "init" in names and "TRAILER!!!" not in names


def test_unchanged_inputs_and_each_kind_of_change(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    old = initrd.record(root, CONTEXT)
    assert old.inputs["usr/bin/kmod"].startswith("f:") and "usr/bin/hello" not in old.inputs
    assert old.inputs[f"usr/lib/modules/{KVER}/kernel/drivers/a.ko"].startswith("f:")
    assert old.inputs[f"usr/lib/modules/{KVER}/modules.dep"] == "s:0"  # picked from, by size
    assert old.packages == {"kmod": "30-1"}  # hello owns nothing the initrd needs
    assert initrd.changes(root, CONTEXT, old) == []
    # packages that do not touch the inputs change nothing
    (root / "usr/bin/hello").write_text("hello 2")
    (root / "var/lib/dpkg/status").write_text(
        (root / "var/lib/dpkg/status").read_text().replace("2.10-3", "2.10-4")
    )
    assert initrd.changes(root, CONTEXT, old) == []
    # nor does a new library: the initrd's ld.so.cache is made from its own libraries
    (root / "etc/ld.so.cache").write_text("the rootfs' cache, with a new library")
    assert "etc/ld.so.cache" not in old.inputs
    assert initrd.changes(root, CONTEXT, old) == []
    # a new hook, a changed file of the initrd, a new module, another generator command line
    (root / "etc/initramfs-tools/hooks").mkdir()
    (root / "etc/initramfs-tools/hooks/zz-app").write_text("#!/bin/sh\n")
    assert initrd.changes(root, CONTEXT, old) == [
        "/etc/initramfs-tools/hooks",
        "/etc/initramfs-tools/hooks/zz-app",
    ]
    (root / "etc/initramfs-tools/hooks/zz-app").unlink()
    (root / "etc/initramfs-tools/hooks").rmdir()
    (root / "usr/bin/kmod").write_text("kmod 31")
    assert initrd.changes(root, CONTEXT, old) == ["/usr/bin/kmod"]
    (root / "usr/bin/kmod").write_text("kmod binary")
    (root / "var/lib/dpkg/status").write_text(
        (root / "var/lib/dpkg/status").read_text().replace("30-1", "31-1")
    )
    assert initrd.changes(root, CONTEXT, old) == ["package kmod 30-1 -> 31-1"]
    new_module = root / f"usr/lib/modules/{KVER}/updates/dkms/b.ko"
    new_module.parent.mkdir(parents=True)
    new_module.write_text("b")
    other = {**CONTEXT, "cmdline": "dracut --force"}
    changes = initrd.changes(root, other, old)
    assert changes[0] == f"cmdline {CONTEXT['cmdline']} -> dracut --force"
    assert f"/usr/lib/modules/{KVER}/updates/dkms/b.ko" in changes


def test_cli_record_and_check(cli: Cli, tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    assert cli("initrd", "check", root, "--context", "epoch=1") == 0
    assert cli.out == f"no record {root / initrd.RECORD}\n"
    assert cli("initrd", "record", root, "--context", "epoch=1") == 0, cli.err
    assert cli.out == f"{root / initrd.RECORD}\n"
    assert cli("initrd", "check", root, "--context", "epoch=1") == 0
    assert cli.out == ""
    (root / "usr/share/initramfs-tools/hooks/udev").write_text("#!/bin/sh\nexit 0\n")
    assert cli("initrd", "check", root, "--context", "epoch=1") == 0
    assert cli.out == "/usr/share/initramfs-tools/hooks/udev\n"
    assert cli("initrd", "check", root, "--context", "epoch") == 1
    assert "expected KEY=VALUE" in cli.err
    (root / initrd.RECORD).write_text("{}")
    assert cli("initrd", "check", root) == 1
    assert "the initrd record" in cli.err and "is corrupt" in cli.err


def test_not_an_initrd(tmp_path: Path) -> None:
    bad = tmp_path / "initrd.img"
    bad.write_bytes(b"\x7fELF not an initramfs")
    with pytest.raises(FormatError, match="not an initramfs"):
        initrd.cpio_names(bad)
