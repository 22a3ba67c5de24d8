"""initrd inputs: what an initramfs made in a rootfs was made from, to reuse it when unchanged.

An image built from a template would otherwise generate its initramfs again although the
template's one is in /boot and, unless the image's own packages touched its inputs, the new
one comes out byte for byte the same (30-70 s on 2 cores). The record lists, for the initrds
in /boot, what decides their content:

- the context: the generator's command line, SOURCE_DATE_EPOCH and the kernel versions;
- the generator, its configuration, hooks and scripts (initramfs-tools and dracut trees,
  modprobe configuration, /etc/fstab and /etc/crypttab, the kernel's config): every entry, with
  the sha256 of every file, so that a new hook or a changed setting counts;
- the trees the generator picks from (the kernel's modules, the firmware): every entry with
  its size, so that a new module (DKMS) or firmware file counts;
- every file the initrd holds, at its path in the rootfs (binaries, libraries, udev rules,
  modules), by sha256;
- the version of every package owning a path of the above, so that an upgrade (a new
  microcode package, say, whose files the initrd holds under other names) counts.

Equal records mean the generator would read the same inputs; any difference is named.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tmpl2deb.errors import FormatError, os_error
from tmpl2deb.run import spawn

RECORD = Path("var/lib/tmpl2deb/initrd-inputs.json")
_CONFIG = (
    "etc/initramfs-tools",
    "usr/share/initramfs-tools",
    "etc/modprobe.d",
    "usr/lib/modprobe.d",
    "etc/dracut.conf",
    "etc/dracut.conf.d",
    "usr/lib/dracut",
    "etc/fstab",
    "etc/crypttab",
    "usr/sbin/mkinitramfs",
    "usr/sbin/update-initramfs",
    "usr/bin/dracut",
)
_PICKED = ("usr/lib/firmware",)
# Members the generator makes in the initrd from other members (ldconfig -r, depmod -b), not
# copies of the rootfs' files of that name: their inputs are recorded, they are not.
_GENERATED = re.compile(
    r"etc/ld\.so\.cache|usr/lib/modules/[^/]+/modules\.[a-z.]*bin|"
    r"usr/lib/modules/[^/]+/modules\.(dep|alias|softdep|symbols|devname)"
)
_CPIO_MAGIC = (b"070701", b"070702")
_DECOMPRESSORS = (
    (b"\x28\xb5\x2f\xfd", ["zstd", "-dc"]),
    (b"\x1f\x8b", ["gzip", "-dc"]),
    (b"\xfd7zXZ\x00", ["xz", "-dc"]),
    (b"\x02\x21\x4c\x18", ["lz4", "-dc"]),
    (b"\x89LZO", ["lzop", "-dc"]),
    (b"BZh", ["bzip2", "-dc"]),
)


def kernel_versions(root: Path) -> list[str]:
    """The versions of the kernels in ROOT/boot (vmlinuz-VERSION, vmlinux-VERSION)."""
    boot = root / "boot"
    names = sorted(p.name for p in boot.glob("vmlinu[xz]-*")) if boot.is_dir() else []
    return [name.split("-", 1)[1] for name in names]


def cpio_names(path: Path) -> list[str]:
    """The member names of an initramfs: cpio (newc) archives, each plain or compressed, one
    after the other (the early microcode archive first)."""
    names: list[str] = []
    with path.open("rb", buffering=0) as f:
        while magic := _peek(f, 6):
            if magic in _CPIO_MAGIC:
                _newc(f, names)
            elif magic.startswith(b"\0"):
                f.seek(f.tell() + 1)  # padding between archives
            else:
                argv = next((a for m, a in _DECOMPRESSORS if magic.startswith(m)), None)
                if argv is None:
                    raise FormatError(f"{path}: not an initramfs (unknown data {magic.hex()})")
                # the generators compress one archive, the last part of the file
                with spawn(argv, stdin=f) as decompressor:
                    head = _read(decompressor.stdout, 6)
                    if head not in _CPIO_MAGIC:
                        raise FormatError(f"{path}: the compressed part is not a cpio archive")
                    _newc(decompressor.stdout, names, head)
                    while decompressor.stdout.read(1 << 20):
                        pass
                    decompressor.wait()
                break
    return names


def _peek(f: IO[bytes], n: int) -> bytes:
    """The next N bytes of a seekable file, which stays where it was."""
    data = _read(f, n)
    f.seek(f.tell() - len(data))
    return data


def _read(f: IO[bytes], n: int) -> bytes:
    chunks = []
    while n > 0 and (chunk := f.read(n)):
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _newc(f: IO[bytes], names: list[str], head: bytes = b"") -> None:
    """Append the names of one newc archive of F to NAMES (HEAD: its bytes already read)."""
    while True:
        header = head + _read(f, 110 - len(head))
        head = b""
        if len(header) < 110 or header[:6] not in _CPIO_MAGIC:
            raise FormatError("initrd: truncated or corrupt cpio archive")
        size, namesize = int(header[54:62], 16), int(header[94:102], 16)
        name = _read(f, namesize)[:-1].decode(errors="surrogateescape")
        _read(f, _pad(110 + namesize) + size + _pad(size))
        if name == "TRAILER!!!":
            return
        names.append(name)


def _pad(n: int) -> int:
    return -n % 4


def _fingerprint(root: Path, rel: str, content: bool) -> str:
    """What an entry is: '-' absent, 'd' a directory, 'l:TARGET', 'f:SHA256' (or 's:SIZE'
    when content is False), or the file type of anything else."""
    path = _inside(root, rel)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "-"
    if stat.S_ISDIR(info.st_mode):
        return "d"
    if stat.S_ISLNK(info.st_mode):
        return "l:" + os.fspath(path.readlink())
    if not stat.S_ISREG(info.st_mode):
        return f"t:{stat.S_IFMT(info.st_mode):o}"
    if not content:
        return f"s:{info.st_size}"
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "f:" + digest.hexdigest()


def _inside(root: Path, rel: str, depth: int = 0) -> Path:
    """ROOT/REL with symlinks of its directories resolved inside ROOT (as in a chroot)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    current = root
    for i, part in enumerate(parts[:-1]):
        candidate = current / part
        if candidate.is_symlink() and depth < 40:
            target = os.fspath(candidate.readlink())
            base = "" if target.startswith("/") else os.path.relpath(current, root)
            rest = "/".join([base, target, *parts[i + 1 :]])
            # an absolute path: ".." above the root stays at the root, as in a chroot
            return _inside(root, os.path.normpath("/" + rest).lstrip("/"), depth + 1)
        current = candidate
    return current / parts[-1] if parts else current


def _walk(root: Path, rel: str) -> Iterator[str]:
    """REL and every entry below it, relative to ROOT (nothing if it does not exist)."""
    top = _inside(root, rel)
    if not os.path.lexists(top):
        return
    yield rel
    if top.is_dir() and not top.is_symlink():
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            base = rel + dirpath[len(os.fspath(top)) :]
            for name in sorted(dirnames + filenames):
                yield f"{base}/{name}"


def _trees(root: Path, kernels: Iterable[str]) -> tuple[list[str], list[str]]:
    """(entries hashed by content, entries by size): the generator's trees, the picked ones."""
    config = list(_CONFIG) + [f"boot/config-{k}" for k in kernels]
    picked = list(_PICKED) + [f"usr/lib/modules/{k}" for k in kernels]
    return [e for t in config for e in _walk(root, t)], [e for t in picked for e in _walk(root, t)]


def _owners(root: Path, paths: set[str]) -> dict[str, str]:
    """package -> version of the installed packages that own one of PATHS."""
    from debian.deb822 import Deb822

    info = root / "var/lib/dpkg/info"
    owning = set()
    for lst in info.glob("*.list"):
        if any(line.lstrip("/") in paths for line in lst.read_text(errors="replace").split("\n")):
            owning.add(lst.name[: -len(".list")].split(":")[0])
    versions = {}
    status = root / "var/lib/dpkg/status"
    with status.open() as f:
        for para in Deb822.iter_paragraphs(f, use_apt_pkg=False):
            if para.get("Package") in owning and para.get("Status", "").endswith(" installed"):
                versions[para["Package"]] = para.get("Version", "")
    return versions


@dataclass(frozen=True, kw_only=True, slots=True)
class Record:
    """The inputs of the initrds of a rootfs (see the module docstring)."""

    context: dict[str, str]
    packages: dict[str, str]  # package -> version, of the owners of the inputs
    inputs: dict[str, str]  # path -> fingerprint

    def to_json(self) -> str:
        data = {"format": 1, "context": self.context, "packages": self.packages}
        return json.dumps({**data, "inputs": self.inputs}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ValueError("not an initrd record of format 1")
        return cls(context=data["context"], packages=data["packages"], inputs=data["inputs"])


def inputs(root: Path, context: dict[str, str], members: Iterable[str]) -> Record:
    """The record of the inputs of initrds of ROOT holding MEMBERS."""
    kernels = kernel_versions(root)
    config, picked = _trees(root, kernels)
    found = {p: _fingerprint(root, p, True) for p in config}
    found.update({p: _fingerprint(root, p, False) for p in picked})
    for name in members:  # by content, also where a picked tree has the path by size
        rel = os.path.normpath(name).lstrip("/")
        if _GENERATED.fullmatch(rel):
            continue
        if rel != "." and found.get(rel, "s:").startswith("s:"):
            found[rel] = _fingerprint(root, rel, True)
    # directories (and merged-/usr links like /lib) are in many packages' lists: files only
    files = {p for p, fp in found.items() if fp.startswith(("f:", "s:"))}
    return Record(
        context={**context, "kernels": " ".join(kernels)},
        packages=_owners(root, files),
        inputs=dict(sorted(found.items())),
    )


def record(root: Path, context: dict[str, str]) -> Record:
    """The record of the initrds that ROOT/boot holds now (their members read from them)."""
    members: list[str] = []
    for kernel in kernel_versions(root):
        initrd = root / "boot" / f"initrd.img-{kernel}"
        try:
            members += cpio_names(initrd)
        except OSError as err:
            raise os_error(err, f"cannot read the initrd {initrd}") from err
    return inputs(root, context, members)


def changes(root: Path, context: dict[str, str], old: Record) -> list[str]:
    """What differs between the recorded inputs OLD and ROOT now (empty: reuse the initrd)."""
    members = [p for p, fp in old.inputs.items() if not fp.startswith("s:")]
    now = inputs(root, context, members)
    diffs = _differ("", old.context, now.context)
    diffs += _differ("package ", old.packages, now.packages)
    return diffs + [
        f"/{path}"
        for path in sorted({*old.inputs, *now.inputs})
        if old.inputs.get(path, "-") != now.inputs.get(path, "-")
        and not (_GENERATED.fullmatch(path) and path not in now.inputs)  # (older records)
    ]


def _differ(prefix: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    return [
        f"{prefix}{key} {old.get(key, '(none)')} -> {new.get(key, '(none)')}"
        for key in sorted({*old, *new})
        if old.get(key) != new.get(key)
    ]


def write_record(path: Path, data: Record) -> None:
    """Write a record as JSON (its directory is made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data.to_json())
    tmp.replace(path)


def read_record(path: Path) -> Record | None:
    """A record written by write_record; None when there is none."""
    try:
        return Record.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as err:
        raise os_error(err, f"cannot read the initrd record {path}") from err
    except (ValueError, KeyError) as err:
        raise FormatError(f"the initrd record {path} is corrupt ({err})") from err
