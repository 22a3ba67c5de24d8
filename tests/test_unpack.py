"""unpack and info: fidelity, integrity, hostile archives, and a real minbase end to end."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Cli, needs_root, needs_tool, sh
from tmpl2deb import treeinfo

pytestmark = pytest.mark.integration

FAR_FUTURE = "4102444800"  # 2100: nothing is clamped, so every mtime must survive


def pack(cli: Cli, source: Path, out: Path, *extra: str) -> Path:
    out.mkdir(exist_ok=True)
    assert cli("pack", source, "--name", "t", "--version", "1", "-o", out, *extra) == 0, cli.err
    return Path(cli.out.strip())


def test_fidelity_round_trip(
    cli: Cli, fidelity_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FAR_FUTURE)
    deb = pack(cli, fidelity_tree, tmp_path / "out", "--no-default-excludes", "--arch", "amd64")
    dest = tmp_path / "dest"
    assert cli("unpack", deb, dest) == 0, cli.err
    assert cli.out == f"{dest}\n"
    before, after = treeinfo.describe(fidelity_tree), treeinfo.describe(dest)
    assert treeinfo.differences(before, after) == []
    # the checks above compare like with like; make sure the tree really had what we claim
    ping = before[b"usr/bin/ping"]
    assert any(name == "security.capability" for name, _ in ping[7])  # type: ignore[attr-defined]
    assert before[b"srv/owned"][2:4] == (1234, 5678)
    assert any("posix_acl_default" in n for n, _ in before[b"srv/shared"][7])  # type: ignore[attr-defined]
    assert before[b"usr/bin/b"][8] == b"usr/bin/a"


def test_unpack_from_a_staging_root(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    needs_root()
    deb = pack(cli, small_tree, tmp_path / "out")
    staging = tmp_path / "staging"
    (staging / "var/cache/apt/archives").mkdir(parents=True)
    shutil.copy(deb, staging / "var/cache/apt/archives")  # where apt-get download puts it
    dest = tmp_path / "dest"
    dest.mkdir()  # empty is fine
    assert cli("unpack", staging, dest) == 0, cli.err
    assert (dest / "var/lib/dpkg/status").is_file()
    assert not (dest / "var/log/apt/history.log").exists()
    assert (dest / "etc/machine-id").read_bytes() == b""


def test_info_table_and_json(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    needs_tool("dpkg-deb")
    deb = pack(cli, small_tree, tmp_path / "out", "--feature", "a", "--signature", "sig1")
    assert cli("info", deb) == 0
    assert "Image           t" in cli.out and "debian bookworm" in cli.out
    assert cli("info", "--json", deb) == 0
    embedded = sh("dpkg-deb", "--fsys-tarfile", deb, text=False).stdout
    with tarfile.open(fileobj=io.BytesIO(embedded)) as tar:
        member = tar.extractfile("./usr/share/tmpl2deb/templates/tmpl-t/metadata.json")
        assert member is not None
        assert cli.out.encode() == member.read()
    assert json.loads(cli.out)["signature"] == "sig1"
    assert cli("info", "--packages", deb) == 0
    assert cli.out == "base-files 12.4 arm64\ndpkg 1.21.22 arm64\n"  # the manifest
    assert cli("info", "--packages", "--json", deb) == 0
    assert json.loads(cli.out)[1] == {
        "package": "dpkg",
        "version": "1.21.22",
        "architecture": "arm64",
    }


def test_non_empty_dest_is_refused(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    needs_root()
    deb = pack(cli, small_tree, tmp_path / "out")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    assert cli("unpack", deb, dest) == 1
    assert "is not empty" in cli.err
    assert [p.name for p in dest.iterdir()] == ["keep"]


def _corrupt(deb: Path, offset_from_end: int) -> None:
    data = bytearray(deb.read_bytes())
    data[-offset_from_end] ^= 0xFF
    deb.write_bytes(bytes(data))


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".dest")]


def test_corrupt_payload_is_refused_and_nothing_is_left(
    cli: Cli, small_tree: Path, tmp_path: Path
) -> None:
    needs_root()
    (small_tree / "noise").write_bytes(bytes(range(256)) * 4000)
    deb = pack(cli, small_tree, tmp_path / "out", "--level", "1")
    layout_payload = _payload_span(deb)
    data = bytearray(deb.read_bytes())
    data[layout_payload[0] + layout_payload[1] // 2] ^= 0xFF
    deb.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    assert cli("unpack", deb, dest) == 1
    assert "error:" in cli.err
    assert not dest.exists() and _leftovers(tmp_path) == []


def _payload_span(deb: Path) -> tuple[int, int]:
    from tmpl2deb.debformat import read_layout

    pieces = list(read_layout(deb).payload.pieces())
    return pieces[len(pieces) // 2]


def test_truncated_deb_is_refused(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    deb = pack(cli, small_tree, tmp_path / "out")
    deb.write_bytes(deb.read_bytes()[:-3000])
    assert cli("info", deb) == 1
    assert "truncated" in cli.err


def test_altered_control_is_refused(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    deb = pack(cli, small_tree, tmp_path / "out")
    data = deb.read_bytes().replace(b"Template-Packages: 2", b"Template-Packages: 3")
    deb.write_bytes(data)
    assert cli("info", deb) == 1
    assert "disagree" in cli.err


def test_a_debian_package_is_not_a_template(cli: Cli, tmp_path: Path) -> None:
    needs_tool("dpkg-deb")
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: hello\nVersion: 1\nArchitecture: all\nMaintainer: a <a@b.c>\nDescription: x\n"
    )
    sh("dpkg-deb", "--build", pkg, tmp_path / "hello.deb")
    assert cli("info", tmp_path / "hello.deb") == 1
    assert "not a tmpl2deb template" in cli.err


def _hostile(tmp_path: Path, *members: tarfile.TarInfo) -> Path:
    path = tmp_path / "hostile.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size))
    return path


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_info("./ok", size=1), _info("/etc/evil", size=1)], "absolute"),
        ([_info("../evil", size=1)], "contains '..'"),
        ([_info("l", tarfile.SYMTYPE, "/tmp"), _info("l/evil", size=1)], "symlink"),
        ([_info("h", tarfile.LNKTYPE, "/etc/passwd")], "absolute"),
        ([_info("l", tarfile.SYMTYPE, ".."), _info("h", tarfile.LNKTYPE, "l/x")], "symlink"),
    ],
)
def test_hostile_archives_are_refused(
    cli: Cli, tmp_path: Path, members: list[tarfile.TarInfo], message: str
) -> None:
    needs_root()
    deb = pack(cli, _hostile(tmp_path, *members), tmp_path / "out", "--arch", "all")
    dest = tmp_path / "dest"
    assert cli("unpack", deb, dest) == 1
    assert message in cli.err
    assert not dest.exists() and _leftovers(tmp_path) == []
    assert not Path("/tmp/evil").exists() and not (tmp_path / "evil").exists()


def test_unpack_needs_root_message(cli: Cli, small_tree: Path, tmp_path: Path) -> None:
    """As an ordinary user (setpriv drops root), unpack says it needs root and writes nothing."""
    needs_root()
    needs_tool("setpriv")
    public = Path(tempfile.mkdtemp())  # pytest's tmp_path is not reachable for nobody
    public.chmod(0o755)
    deb = pack(cli, small_tree, public)
    dest = public / "dest"
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "tmpl2deb", "unpack", deb, dest],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 3  # the host (a privilege) is missing
    shutil.rmtree(public)
    assert "needs root" in result.stderr and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1


def test_minbase_end_to_end(cli: Cli, minbase: Path, tmp_path: Path) -> None:
    """A real mmdebstrap rootfs: pack, info, unpack; the tree is identical minus excludes."""
    needs_tool("dpkg-deb", "lintian")
    deb = pack(cli, minbase, tmp_path / "out")
    assert cli("info", "--json", deb) == 0
    meta = json.loads(cli.out)
    assert meta["distro"] == "debian" and meta["suite"] == "bookworm"
    assert meta["packages"] > 80
    dest = tmp_path / "dest"
    assert cli("unpack", deb, dest) == 0, cli.err
    before, after = treeinfo.describe(minbase), treeinfo.describe(dest)
    gone = before.keys() - after.keys()
    excluded = (
        b"var/cache/apt/",
        b"var/log/",
        b"var/lib/apt/lists/",
        b"etc/apt/sources.list",
        b"run/",
        b"tmp/",
        b"var/tmp/",
        b"dev/",
        b"etc/resolv.conf",
        b"etc/hosts",
    )
    assert gone and all(k.startswith(excluded) for k in gone), sorted(gone)
    epoch = int(meta["build_date"][:4])  # clamped mtimes differ; compare the rest
    assert epoch >= 2023

    changed = treeinfo.changed(before, after, ignore_mtime=True)
    assert changed == []
    assert sh("dpkg", "--root", dest, "--audit").stdout == ""


@pytest.mark.parametrize("verb", ["pack", "unpack"])
def test_ctrl_c_exits_130_and_leaves_nothing(minbase: Path, tmp_path: Path, verb: str) -> None:
    """SIGINT in the middle of the stream: exit 130, no partial .deb, no partial tree."""
    import signal
    import time

    out = tmp_path / "out"
    out.mkdir()
    base: list[str | Path] = [sys.executable, "-m", "tmpl2deb"]
    deb = out / "tmpl-t_1_amd64.deb"
    if verb == "unpack":
        sh(*base, "pack", minbase, "--name", "t", "--version", "1", "--level", "1", "-o", out)
    argv: list[str | Path] = {
        "pack": [
            *base,
            "pack",
            minbase,
            "--name",
            "t",
            "--version",
            "1",
            "--level",
            "19",
            "-o",
            out,
        ],
        "unpack": [*base, "unpack", deb, tmp_path / "dest"],
    }[verb]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # inside the stream: level 19 packs take many seconds, unpack ~2 s
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    if process.returncode == 0:
        pytest.skip(f"{verb} finished before the signal; nothing to check")
    assert process.returncode == 130, err
    assert "interrupted" in err
    leftovers = sorted(p.name for p in out.iterdir() if p.name != deb.name or verb == "pack")
    assert leftovers == []
    assert not (tmp_path / "dest").exists() and _leftovers(tmp_path) == []


def test_unpack_checks_what_the_build_needs(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    """The checks stage makes, for a template handed over as a file (SRC_URI)."""
    deb = pack_small()  # arm64, debian bookworm
    dest = tmp_path / "dest"
    assert cli("unpack", deb, dest, "--arch", "amd64") == 1
    assert "has architecture 'arm64', the build wants 'amd64'" in cli.err and not dest.exists()
    assert cli("unpack", deb, dest, "--suite", "trixie") == 1 and not dest.exists()
    assert cli("unpack", deb, dest, "--arch", "arm64", "--distro", "debian") == 0, cli.err
