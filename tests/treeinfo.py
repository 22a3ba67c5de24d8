"""Describe a directory tree's entries and metadata so two trees can be compared exactly."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

Entry = tuple[object, ...]


def describe(root: Path) -> dict[bytes, Entry]:
    """path -> (type, mode, uid, gid, mtime_ns, size/rdev, link target, sha256, xattrs, link group)."""
    entries: dict[bytes, Entry] = {}
    inodes: dict[tuple[int, int], bytes] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            entries[rel] = _entry(path, rel, inodes)
    entries[b"."] = _entry(base, b".", {})
    return entries


def _entry(path: bytes, rel: bytes, inodes: dict[tuple[int, int], bytes]) -> Entry:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    group = b""
    if kind == stat.S_IFREG and st.st_nlink > 1:
        group = inodes.setdefault((st.st_dev, st.st_ino), rel)
    content: object = ""
    if kind == stat.S_IFREG:
        content = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()
    elif kind == stat.S_IFLNK:
        content = os.readlink(path)
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        content = (os.major(st.st_rdev), os.minor(st.st_rdev))
    mtime = st.st_mtime_ns
    size = st.st_size if kind == stat.S_IFREG else 0
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, size, content,
            _xattrs(path), group)  # fmt: skip


def _xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def differences(a: dict[bytes, Entry], b: dict[bytes, Entry]) -> list[str]:
    """Human-readable differences between two descriptions."""
    out = [f"only in first: {k!r}" for k in sorted(a.keys() - b.keys())]
    out += [f"only in second: {k!r}" for k in sorted(b.keys() - a.keys())]
    out += [f"{k!r}: {a[k]} != {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return out


def make_fidelity_tree(root: Path) -> None:
    """setuid/setgid/sticky, capability, hardlinks, symlinks, devices, fifo, xattrs, ACLs,
    foreign owner, nanosecond mtime, a non-UTF-8 name and a 300-character path."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "dev").mkdir()
    (root / "srv/shared").mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    ping = root / "usr/bin/ping"
    ping.write_bytes(b"\x7fELF fake ping\n")
    ping.chmod(0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", os.fspath(ping)], check=True)
    suid = root / "usr/bin/su"
    suid.write_text("su\n")
    suid.chmod(0o4755)
    sgid = root / "usr/bin/wall"
    sgid.write_text("wall\n")
    os.chown(sgid, 0, 5)
    sgid.chmod(0o2755)
    (root / "usr/bin/a").write_text("hardlinked\n")
    os.link(root / "usr/bin/a", root / "usr/bin/b")
    (root / "usr/bin/rel").symlink_to("a")
    (root / "etc/abs").symlink_to("/usr/bin/a")
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "dev/loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(root / "dev/initctl", 0o600)
    owned = root / "srv/owned"
    owned.write_text("owned\n")
    os.chown(owned, 1234, 5678)
    os.setxattr(owned, "user.comment", b"hello")
    os.setxattr(owned, "trusted.overlay", b"\x00\x01binary")
    os.setxattr(owned, "security.selinux", b"system_u:object_r:var_t:s0\x00")
    shared = root / "srv/shared"
    subprocess.run(["setfacl", "-m", "u:1234:rwx", os.fspath(shared)], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:5678:r-x", os.fspath(shared)], check=True)
    precise = root / "srv/precise"
    precise.write_text("ns\n")
    os.utime(precise, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (root / os.fsdecode(b"srv/latin1-\xe9t\xe9")).write_text("non-UTF-8 name\n")
    deep = root / "srv" / "/".join(["d" * 49] * 5)
    deep.mkdir(parents=True)
    (deep / ("f" * 40)).write_text("deep\n")
    assert len(os.fspath(deep / ("f" * 40)).split("/srv/", 1)[1]) > 280
