"""pack with the real consumers of a .deb: ar, dpkg-deb, dpkg, tar, zstd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Cli, needs_root, needs_tool, sh
from tmpl2deb.pump import Reader
from tmpl2deb.tarstream import next_header

pytestmark = pytest.mark.integration

DIR = "usr/share/tmpl2deb/templates/tmpl-small"


def test_deb_is_read_by_ar_and_dpkg_deb(pack_small: Callable[..., Path], tmp_path: Path) -> None:
    needs_tool("ar", "dpkg-deb", "tar", "zstd")
    deb = pack_small("--feature", "ssh", "--parent", "tmpl-bsp=2.0")
    assert deb.name == "tmpl-small_1.0_arm64.deb"
    assert sh("ar", "t", deb).stdout.split() == ["debian-binary", "control.tar.gz", "data.tar.gz"]
    fields = sh("dpkg-deb", "--field", deb).stdout
    assert "Package: tmpl-small\n" in fields and "Depends" not in fields
    assert sh("dpkg-deb", "--field", deb, "Template-Parent").stdout == "tmpl-bsp (= 2.0)\n"
    assert sh("dpkg-deb", "--field", deb, "Template-Distro").stdout == "debian\n"
    contents = sh("dpkg-deb", "--contents", deb).stdout
    for name in ("rootfs.tar.zst", "manifest", "metadata.json"):
        assert f"./{DIR}/{name}" in contents
    out = tmp_path / "x"
    sh("dpkg-deb", "-x", deb, out)
    meta = json.loads((out / DIR / "metadata.json").read_text())
    assert meta["features"] == ["ssh"] and meta["packages"] == 2
    assert (out / DIR / "manifest").read_text() == "base-files 12.4 arm64\ndpkg 1.21.22 arm64\n"
    rootfs_tar = sh("zstd", "-dc", out / DIR / "rootfs.tar.zst", text=False).stdout
    import hashlib

    # format 2: the payload's own sha256, and a full template's rootfs identity is it
    payload = hashlib.sha256((out / DIR / "rootfs.tar.zst").read_bytes()).hexdigest()
    assert meta["format"] == 2 and payload == meta["payload_sha256"] == meta["rootfs_sha256"]
    assert len(rootfs_tar) == meta["rootfs_size"]
    assert len(rootfs_tar) == meta["rootfs_size"]
    listing = sh("tar", "-t", "--file=-", input=rootfs_tar, text=False).stdout.decode()
    assert meta["rootfs_files"] == len(listing.split())


def test_default_excludes_apply(pack_small: Callable[..., Path], tmp_path: Path) -> None:
    needs_tool("dpkg-deb", "tar", "zstd")
    deb = pack_small("--exclude", "/etc/hostname")
    out = tmp_path / "x"
    sh("dpkg-deb", "-x", deb, out)
    payload = sh("zstd", "-dc", out / DIR / "rootfs.tar.zst", text=False).stdout
    listing = sh("tar", "-tv", "--file=-", input=payload, text=False).stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines()]
    assert "./etc/apt/sources.list.d/" in names  # directory kept ...
    assert "./etc/apt/sources.list.d/debian.sources" not in names  # ... contents gone
    assert "./var/log/apt/history.log" not in names and "./var/log/" in names
    assert "./etc/hostname" not in names
    machine_id = next(line for line in listing.splitlines() if "machine-id" in line)
    assert machine_id.split()[2] == "0"  # emptied, not removed
    recorded = sh("dpkg-deb", "--field", deb, "Template-Excludes").stdout
    assert "/etc/hostname" in recorded and "=/etc/machine-id" in recorded


def test_no_default_excludes(pack_small: Callable[..., Path], cli: Cli) -> None:
    deb = pack_small("--no-default-excludes")
    assert cli("info", "--json", deb) == 0
    assert json.loads(cli.out)["excludes"] == []


def test_dpkg_installs_into_a_root_without_touching_the_host(
    pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    needs_root()
    needs_tool("dpkg")
    deb = pack_small("--arch", "all")
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/updates").mkdir()
    (root / "var/lib/dpkg/status").touch()
    host_status = Path("/var/lib/dpkg/status").read_bytes()
    sh("dpkg", "--root", root, "--force-script-chrootless", "--log=/dev/null", "-i", deb)
    assert (root / DIR / "rootfs.tar.zst").is_file()
    assert "Package: tmpl-small" in (root / "var/lib/dpkg/status").read_text()
    assert Path("/var/lib/dpkg/status").read_bytes() == host_status


def test_reproducible_twice_and_from_a_copy(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    needs_tool("cp")
    copy = tmp_path / "copy"
    shutil.copytree(small_tree, copy, symlinks=True)
    sh("cp", "-a", f"{small_tree}/.", copy)  # cp -a also carries the times of directories
    debs = []
    for n, source in enumerate((small_tree, small_tree, copy)):
        out = tmp_path / f"out{n}"
        out.mkdir()
        assert cli("pack", source, "--name", "small", "-o", out) == 0, cli.err
        debs.append(Path(cli.out.strip()).read_bytes())
    assert debs[0] == debs[1] == debs[2]


def test_build_date_and_version_follow_source_date_epoch(
    pack_small: Callable[..., Path], cli: Cli, small_tree: Path, tmp_path: Path
) -> None:
    assert cli("pack", small_tree, "--name", "small", "-o", tmp_path) == 0
    deb = Path(cli.out.strip())
    assert deb.name == "tmpl-small_0+20231114.221320_arm64.deb"
    assert cli("info", "--json", deb) == 0
    assert json.loads(cli.out)["build_date"] == "2023-11-14T22:13:20Z"


def test_pack_from_tarballs(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    needs_tool("tar", "zstd", "gzip", "xz")
    digests = set()
    for suffix, flag in (
        (".tar", ""),
        (".tar.zst", "--zstd"),
        (".tar.gz", "-z"),
        (".tar.xz", "-J"),
    ):
        tarball = tmp_path / f"rootfs{suffix}"
        sh("tar", "-c", *([flag] if flag else []), "-f", tarball, "-C", small_tree, ".")
        out = tmp_path / suffix.strip(".")
        out.mkdir()
        assert cli("pack", tarball, "--name", "small", "--version", "1", "-o", out) == 0, cli.err
        assert cli("info", "--json", cli.out.strip()) == 0
        meta = json.loads(cli.out)
        assert meta["packages"] == 2 and meta["suite"] == "bookworm"
        digests.add(meta["rootfs_sha256"])
    assert len(digests) == 1  # the same stream whatever the compression


def _tarball_by(writer: str, tree: Path, tarball: Path) -> None:
    """tree as a tarball written by one of the tar writers rootfs tarballs come from."""
    if writer in ("gnu", "posix"):
        sh("tar", "-c", f"--format={writer}", "-f", tarball, "-C", tree, ".")
    elif writer == "bsdtar":
        sh("bsdtar", "-c", "-f", tarball, "-C", tree, ".")
    elif writer == "tarfile":  # a pax global header ('g') before the members
        with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT,
                          pax_headers={"comment": "made by tarfile"}) as tar:  # fmt: skip
            for path in sorted(tree.rglob("*")):
                tar.add(path, arcname=os.fspath(path.relative_to(tree)), recursive=False)
    else:  # git archive: a pax global header with the commit id, names without "./"
        git: list[str | Path] = ["git", "-C", tree, "-c", "user.name=t", "-c", "user.email=t@x.org"]
        sh(*git, "init", "-q")
        sh(*git, "add", "-A")
        sh(*git, "commit", "-q", "-m", "rootfs")
        with tarball.open("wb") as out:
            subprocess.run([*git, "archive", "--format=tar", "HEAD"], stdout=out, check=True)


@pytest.mark.parametrize("writer", ["gnu", "posix", "bsdtar", "tarfile", "git"])
def test_pack_tarballs_of_every_writer(
    cli: Cli, small_tree: Path, tmp_path: Path, writer: str
) -> None:
    """Every header kind GNU tar, bsdtar, Python's tarfile and git archive write is read:
    the files come out of the template as they went in."""
    needs_tool({"bsdtar": "bsdtar", "git": "git"}.get(writer, "tar"))
    tarball = tmp_path / "rootfs.tar"
    _tarball_by(writer, small_tree, tarball)
    out = tmp_path / "out"
    out.mkdir()
    argv: list[str | Path] = ["pack", tarball, "--name", "small", "--version", "1", "-o", out]
    assert cli(*argv, "--no-default-excludes") == 0, cli.err
    deb = cli.out.strip()
    assert cli("info", "--files", deb) == 0, cli.err
    listed = {line.split(maxsplit=5)[5].split(" -> ")[0] for line in cli.out.splitlines()}
    files = {"/" + os.fspath(p.relative_to(small_tree)) for p in small_tree.rglob("*")
             if p.is_file() and ".git" not in p.parts}  # fmt: skip
    assert files and files <= listed


@pytest.mark.parametrize("writer", ["gnu", "posix", "bsdtar", "tarfile", "git"])
def test_the_tar_reader_sees_what_tarfile_sees(
    small_tree: Path, tmp_path: Path, writer: str
) -> None:
    """tarstream.next_header (the one reader of the filter, the delta and diff) against
    Python's tarfile, on the tarball of every writer: the same members, kinds, sizes, links,
    and the data where tarfile finds it."""
    needs_tool({"bsdtar": "bsdtar", "git": "git"}.get(writer, "tar"))
    tarball = tmp_path / "rootfs.tar"
    _tarball_by(writer, small_tree, tarball)
    seen = []
    with tarball.open("rb") as f:
        reader = Reader(f.fileno(), "test")
        while (header := next_header(reader)) is not None:
            m = header.member
            data = b"".join(bytes(v) for v in reader.chunks(header.padded))[: m.size]
            seen.append((m.name.decode(), chr(m.type), m.size, m.linkname.decode(), data))
        assert set(b"".join(bytes(v) for v in reader.rest())) <= {0}  # padding only
    expected = []
    with tarfile.open(tarball) as tar:
        for info in tar:
            name = info.name.removeprefix("./").rstrip("/")
            data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            kind = "0" if info.type in (tarfile.AREGTYPE, tarfile.REGTYPE) else info.type.decode()
            expected.append((name if name != "." else "", kind, info.size, info.linkname, data))
    assert seen == expected and len(seen) > 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pack", "{missing}", "--name", "x"], "cannot read rootfs"),
        (["pack", "{tree}", "--name", "bad name"], "invalid name"),
        (["pack", "{tree}", "--name", "x", "--version", "v1"], "invalid version"),
        (["pack", "{tree}", "--name", "x", "--parent", "tmpl-a"], "invalid parent"),
        (["pack", "{tree}", "--name", "x", "--exclude", "var/log"], "absolute path pattern"),
        (["pack", "{tree}", "--name", "x", "--level", "30"], "zstd level"),
        (["pack", "{tree}", "--name", "x", "-o", "{missing}"], "does not exist"),
        (["pack", "{tree}/etc/hostname", "--name", "x"], "unknown rootfs archive type"),
        (["info", "{tree}/etc/hostname"], "not a Debian package"),
        (["unpack", "{tree}/etc/hostname", "{tmp}/new"], "not a Debian package"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_leaves_nothing(
    cli: Cli, small_tree: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    out_dir = tmp_path / "outdir"
    out_dir.mkdir()
    values = {"tree": small_tree, "missing": tmp_path / "nope", "tmp": tmp_path}
    args = [a.format(**values) for a in argv]
    if args[0] == "pack" and "-o" not in args:
        args += ["-o", str(out_dir)]
    assert cli(*args) == 1
    assert message in cli.err
    errors = [line for line in cli.err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and cli.err.splitlines()[-1] == errors[0]
    assert cli.out == ""
    assert list(out_dir.iterdir()) == []
    assert not (tmp_path / "new").exists()


def test_usage_errors_exit_2(cli: Cli) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("pack")
    assert exit_.value.code == 2


def test_debug_shows_traceback(cli: Cli, tmp_path: Path) -> None:
    assert cli("info", "--debug", tmp_path / "nope.deb") == 1
    assert "Traceback" in cli.err


def test_lintian_reports_no_errors(pack_small: Callable[..., Path]) -> None:
    needs_tool("lintian")
    deb = pack_small("--arch", "amd64")
    result = subprocess.run(
        ["lintian", "--allow-root", "--no-cfg", deb], capture_output=True, text=True, check=False
    )
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], result.stdout
    assert result.returncode in (0, 2), result.stderr  # 2: warnings only
    assert "uses-no-compression" not in result.stdout


def test_corrupt_tarball_names_the_failing_tool(cli: Cli, tmp_path: Path) -> None:
    needs_tool("zstd")
    bad = tmp_path / "rootfs.tar.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 100)
    out = tmp_path / "out"
    out.mkdir()
    assert cli("pack", bad, "--name", "x", "-o", out) == 1
    assert "error: zstd failed" in cli.err
    assert list(out.iterdir()) == []


def test_pack_warns_about_a_tree_not_owned_by_root(
    cli: Cli, small_tree: Path, tmp_path: Path
) -> None:
    needs_root()
    out = tmp_path / "out"
    out.mkdir()
    argv: list[str | Path] = ["pack", small_tree, "--name", "t", "-o", out]
    assert cli(*argv) == 0, cli.err
    assert "not root" not in cli.err
    os.chown(small_tree / "usr", 1234, 1234)  # as a `chown -R builder` of a build dir does
    assert cli(*argv) == 0, cli.err
    assert "small/usr is owned by uid 1234, not root" in cli.err


def test_output_options_before_or_after_the_verb(cli: Cli, pack_small: Callable[..., Path]) -> None:
    deb = pack_small()
    assert cli("-q", "info", deb) == 0, cli.err
    assert "Package" in cli.out
    assert cli("-v", "info", "-v", deb) == 0, cli.err
    assert cli("--debug", "info", deb.with_name("missing.deb")) == 1
    assert "Traceback" in cli.err  # --debug before the verb took effect
