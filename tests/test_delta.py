"""Delta templates: a tar delta against the parent's rootfs tar, resolved through the chain;
and diff between templates."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from tests.conftest import Cli, http_server, make_fidelity_tree, needs_root, needs_tool, sh
from tmpl2deb import treeinfo
from tmpl2deb.template import open_template

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("host_untouched")]

STATUS = "var/lib/dpkg/status"


@pytest.fixture(autouse=True)
def _tools() -> None:
    needs_root()
    needs_tool("zstd", "tar", "dpkg-deb", "setcap", "setfacl", "setfattr")


def noise(size: int, seed: int) -> bytes:
    """Incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def status(*packages: tuple[str, str]) -> str:
    return "".join(
        f"Package: {name}\nStatus: install ok installed\nVersion: {version}\n"
        "Architecture: amd64\n\n"
        for name, version in packages
    )


def make_base(root: Path) -> None:
    """The fidelity tree (every kind of entry and attribute) with 2 MB of content."""
    make_fidelity_tree(root)
    (root / "usr/lib/os-release").parent.mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / STATUS).write_text(status(("dpkg", "1.21.22"), ("base-files", "12.4")))
    (root / "usr/lib/big").mkdir()
    for n in range(8):
        (root / f"usr/lib/big/blob{n}").write_bytes(noise(256 << 10, n))


def derive_tree(parent: Path, child: Path, step: int) -> None:
    """A copy of PARENT with a package's worth of changes: a file added, one changed,
    one removed, one chmod-ed, an xattr changed, and the dpkg status extended."""
    sh("cp", "-a", parent, child)
    (child / f"usr/bin/tool{step}").write_bytes(noise(40 << 10, 100 + step))
    (child / f"usr/bin/tool{step}").chmod(0o755)
    (child / "usr/lib/big/blob0").write_bytes(noise(256 << 10, 200 + step))
    (child / f"usr/lib/big/blob{step}").unlink()
    (child / "usr/bin/a").chmod(0o700)
    os.setxattr(child / "srv/owned", "user.comment", f"step {step}".encode())
    with (child / STATUS).open("a") as f:
        f.write(status((f"tool{step}", "1.0")))


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    needs_root()
    needs_tool("setcap", "setfacl", "setfattr")
    top = tmp_path_factory.mktemp("trees")
    base, middleware, application = top / "base", top / "middleware", top / "application"
    make_base(base)
    derive_tree(base, middleware, 1)
    derive_tree(middleware, application, 2)
    return {"base": base, "middleware": middleware, "application": application}


def pack(cli: Cli, tree: Path, name: str, out: Path, *extra: str | Path) -> Path:
    out.mkdir(exist_ok=True)
    argv: list[str | Path] = [
        "pack",
        tree,
        "--name",
        name,
        "--version",
        "1.0",
        "--arch",
        "amd64",
        "-o",
        out,
    ]
    assert cli(*argv, *extra) == 0, cli.err
    return Path(cli.out.strip())


@pytest.fixture
def chain(cli: Cli, trees: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """base (full) <- middleware (delta) <- application (delta), in one directory."""
    out = tmp_path / "debs"
    base = pack(cli, trees["base"], "base", out)
    middleware = pack(cli, trees["middleware"], "middleware", out, "--delta-from", base)
    application = pack(cli, trees["application"], "app", out, "--delta-from", middleware)
    return {"base": base, "middleware": middleware, "application": application}


def field(deb: Path, name: str) -> str:
    return str(sh("dpkg-deb", "--field", deb, name).stdout).strip()


def test_chain_unpacks_identical_to_full(
    cli: Cli, trees: dict[str, Path], chain: dict[str, Path], tmp_path: Path
) -> None:
    application = chain["application"]
    assert field(application, "Depends") == "tmpl-middleware (= 1.0)"
    assert field(application, "Template-Payload") == "delta"
    assert field(application, "Template-Parent") == "tmpl-middleware (= 1.0)"
    middle = open_template(chain["middleware"]).metadata
    assert field(application, "Template-Parent-Rootfs-Sha256") == middle.rootfs_sha256
    assert (
        field(chain["base"], "Depends") == "" and field(chain["base"], "Template-Payload") == "full"
    )
    listing = sh("dpkg-deb", "--contents", application).stdout
    assert "/tmpl-app/rootfs.tardelta.zst" in listing and "rootfs.tar.zst\n" not in listing

    full = pack(cli, trees["application"], "app", tmp_path / "full")
    via_chain, via_full = tmp_path / "via-chain", tmp_path / "via-full"
    assert cli("unpack", application, via_chain) == 0, cli.err
    assert cli("unpack", full, via_full) == 0, cli.err
    described = treeinfo.describe(via_chain)
    assert treeinfo.differences(described, treeinfo.describe(via_full)) == []
    assert b"usr/bin/tool2" in described and b"usr/lib/big/blob2" not in described
    # info --files reads the listing from the payloads, through the chain: the same
    assert cli("info", "--files", application) == 0, cli.err
    through_chain = cli.out
    assert cli("info", "--files", full) == 0, cli.err
    assert through_chain == cli.out and "/usr/bin/tool2" in cli.out
    # the same rootfs tar; the identities differ: format 2 derives them from the payloads
    full_meta, app_meta = open_template(full).metadata, open_template(application).metadata
    assert full_meta.rootfs_size == app_meta.rootfs_size
    assert full_meta.rootfs_sha256 == full_meta.payload_sha256 != app_meta.rootfs_sha256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work dirs left

    # a one-package layer ships in a few per cent of its full payload
    delta_size = open_template(application).payload.span.size
    full_size = open_template(full).payload.span.size
    assert delta_size < 0.2 * full_size, (delta_size, full_size)

    # reproducible like a full template
    again = pack(cli, trees["application"], "app", tmp_path / "again", "--delta-from",
                 chain["middleware"])  # fmt: skip
    assert again.read_bytes() == application.read_bytes()

    assert cli("info", application) == 0, cli.err
    lines = cli.out.splitlines()
    chain_at = next(n for n, line in enumerate(lines) if line.startswith("Chain"))
    shown = [line.split()[-4:-2] for line in lines[chain_at : chain_at + 3]]
    assert shown == [["1.0", "delta"], ["1.0", "delta"], ["1.0", "full"]]
    assert "tmpl-base 1.0 full" in lines[chain_at + 2]


def test_delta_through_repository_and_apt(
    cli: Cli, chain: dict[str, Path], trees: dict[str, Path], tmp_path: Path
) -> None:
    """stage has apt fetch the whole chain into the staging root."""
    needs_tool("apt-get")
    lone = tmp_path / "lone"
    assert cli("publish", "--repo", lone, chain["application"]) == 1
    assert "tmpl-app 1.0 is a delta of tmpl-middleware (= 1.0), which" in cli.err
    assert "publish the parent first (or with it)" in cli.err
    assert not lone.exists()
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, *chain.values()) == 0, cli.err
    staging = tmp_path / "staging"
    with http_server(repo) as url:
        source = f"deb [trusted=yes] {url} bookworm main"
        assert (
            cli("stage", "--source", source, "--arch", "amd64", "tmpl-app", staging) == 0
        ), cli.err
    archives = staging / "var/cache/apt/archives"
    assert sorted(p.name.split("_")[0] for p in archives.glob("*.deb")) == [
        "tmpl-app", "tmpl-base", "tmpl-middleware"
    ]  # fmt: skip
    dest = tmp_path / "dest"
    assert cli("unpack", staging, dest) == 0, cli.err  # the leaf of the chain by default
    direct = tmp_path / "direct"
    assert cli("unpack", chain["application"], direct) == 0, cli.err
    assert treeinfo.differences(treeinfo.describe(dest), treeinfo.describe(direct)) == []
    middle = tmp_path / "middle"
    assert cli("unpack", staging, middle, "--package", "tmpl-middleware") == 0, cli.err
    assert (middle / "usr/bin/tool1").is_file() and not (middle / "usr/bin/tool2").exists()

    # the staged middleware swapped for another valid delta of the base under the same name:
    # the application records which parent it was made against
    other = pack(cli, trees["application"], "middleware", tmp_path / "other",
                 "--delta-from", chain["base"])  # fmt: skip
    (archives / "tmpl-middleware_1.0_amd64.deb").write_bytes(other.read_bytes())
    broken = tmp_path / "broken"
    assert cli("unpack", staging, broken) == 1
    assert "it is not the parent the delta was made against" in cli.err and not broken.exists()


def test_bad_chains_are_refused(
    cli: Cli, trees: dict[str, Path], chain: dict[str, Path], tmp_path: Path
) -> None:
    dest = tmp_path / "dest"

    def fails(*argv: str | Path) -> str:
        assert cli("unpack", *argv, dest) == 1
        assert not dest.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dest.")]
        assert len([ln for ln in cli.err.splitlines() if "error:" in ln]) == 1, cli.err
        return cli.err

    # missing parent
    alone = tmp_path / "alone"
    alone.mkdir()
    lonely = Path(shutil.copy(chain["application"], alone))
    assert "is a delta of tmpl-middleware (= 1.0), which is not given" in fails(lonely)
    # ... found with --with-parent (and its own parent next to it)
    assert cli("unpack", lonely, dest, "--with-parent", chain["middleware"]) == 0, cli.err
    shutil.rmtree(dest)

    # wrong parent version under the right file name
    other = pack(cli, trees["middleware"], "middleware", tmp_path / "v2", "--version", "2.0")
    shutil.copy(other, alone / "tmpl-middleware_1.0_amd64.deb")
    assert "but " in fails(lonely) and "has tmpl-middleware 2.0" in cli.err

    # right package and version, other rootfs: the digests are named
    impostor = pack(cli, trees["application"], "middleware", tmp_path / "impostor")
    shutil.copy(impostor, alone / "tmpl-middleware_1.0_amd64.deb")
    err = fails(lonely)
    want = open_template(chain["middleware"]).metadata.rootfs_sha256[:16]
    have = open_template(impostor).metadata.rootfs_sha256[:16]
    assert "tmpl-app 1.0 is a delta of tmpl-middleware 1.0" in err
    assert want in err and have in err

    # a broken delta: bytes of the payload zeroed
    broken = tmp_path / "broken"
    broken.mkdir()
    for deb in (chain["base"], chain["middleware"]):
        shutil.copy(deb, broken)
    damaged = broken / chain["application"].name
    data = bytearray(chain["application"].read_bytes())
    payload = open_template(chain["application"]).payload
    at = next(payload.pieces())[0] + payload.span.size // 2
    data[at : at + 64] = bytes(64)
    damaged.write_bytes(bytes(data))
    err = fails(damaged)
    assert "zstd" in err or "does not match its recorded sha256" in err

    # a cycle: tmpl-x 1.0 -> tmpl-y 1.0 -> tmpl-x 1.0
    cycle = tmp_path / "cycle"
    x1 = pack(cli, trees["base"], "x", tmp_path / "x1")
    y = pack(cli, trees["middleware"], "y", cycle, "--delta-from", x1)
    pack(cli, trees["application"], "x", cycle, "--delta-from", y, "--with-parent", x1)
    assert "cycle: tmpl-x 1.0 -> tmpl-y 1.0 -> tmpl-x 1.0" in fails(cycle / "tmpl-x_1.0_amd64.deb")


def test_delta_falls_back_to_full(cli: Cli, trees: dict[str, Path], tmp_path: Path) -> None:
    base = pack(cli, trees["base"], "base", tmp_path / "base")
    unrelated = tmp_path / "unrelated"
    make_base(unrelated)
    for n in range(8):  # other content than the base's
        (unrelated / f"usr/lib/big/blob{n}").write_bytes(noise(256 << 10, 1000 + n))
    deb = pack(cli, unrelated, "other", tmp_path / "out", "--delta-from", base)
    assert "more than half of the" in cli.err and "packing a full template" in cli.err
    assert field(deb, "Template-Payload") == "full" and field(deb, "Depends") == ""
    assert field(deb, "Template-Parent") == "tmpl-base (= 1.0)"  # still where it came from
    full = pack(cli, unrelated, "other", tmp_path / "full")
    assert open_template(deb).metadata.rootfs_sha256 == open_template(full).metadata.rootfs_sha256


def test_pack_delta_bad_input(cli: Cli, trees: dict[str, Path], tmp_path: Path) -> None:
    base = pack(cli, trees["base"], "base", tmp_path / "base")
    out = tmp_path / "out"
    out.mkdir()
    argv: list[str | Path] = ["pack", trees["middleware"], "--name", "mw", "-o", out]
    assert cli(*argv, "--delta-from", tmp_path / "missing.deb") == 1
    assert "cannot read" in cli.err
    assert cli(*argv, "--delta-from", base, "--parent", "tmpl-other=1.0") == 2  # usage
    assert "is not the template the delta is made against (tmpl-base (= 1.0))" in cli.err
    assert cli(*argv, "--delta-from", base, "--arch", "arm64") == 2
    assert "cannot be arm64" in cli.err
    assert list(out.iterdir()) == []


def test_diff(cli: Cli, trees: dict[str, Path], chain: dict[str, Path]) -> None:
    assert cli("diff", chain["base"], chain["application"]) == 0, cli.err
    lines = cli.out.splitlines()
    assert lines[:3] == [
        "--- tmpl-base 1.0",
        "+++ tmpl-app 1.0",
        "packages: 2 added, 0 removed, 0 changed",
    ]
    assert "+ tool1 1.0 amd64" in lines and "+ tool2 1.0 amd64" in lines
    assert "files: 2 added, 2 removed, 5 changed" in lines
    assert "+ /usr/bin/tool1" in lines and "- /usr/lib/big/blob2" in lines
    assert "~ /usr/bin/a (mode)" in lines  # and its hard link
    assert "~ /usr/lib/big/blob0 (content)" in lines
    assert "~ /srv/owned (xattrs)" in lines
    assert "~ /var/lib/dpkg/status (size, content)" in [
        line.replace("mtime, ", "").replace(", mtime", "") for line in lines
    ]
    assert cli("diff", "--json", "--packages-only", chain["middleware"], chain["application"]) == 0
    data = json.loads(cli.out)
    assert data["packages"] == {"added": ["tool2 1.0 amd64"], "removed": [], "changed": []}
    assert "files" not in data
    assert cli("diff", chain["application"], chain["application"]) == 0
    assert "files: 0 added, 0 removed, 0 changed" in cli.out
    # the listings really were read: a full and a delta template of one tree are the same
    assert cli("diff", "--json", chain["application"], pack(cli, trees["application"], "app",
               chain["base"].parent / "full")) == 0  # fmt: skip
    assert json.loads(cli.out)["files"] == {"added": [], "removed": [], "changed": {}}
    assert cli("diff", chain["base"], chain["base"].parent / "nothere.deb") == 1
    assert "cannot read" in cli.err
    # --exit-code: 1 when they differ, as git diff --exit-code
    assert cli("diff", "--exit-code", chain["application"], chain["application"]) == 0
    assert cli("diff", "--exit-code", "--packages-only", chain["base"], chain["application"]) == 1
    assert "packages: 2 added" in cli.out
