"""The Isar layer parses with a real bitbake, when an Isar checkout is given.

TMPL2DEB_ISAR_DIR=/path/to/isar (github.com/ilbers/isar). bitbake refuses to run as root, so
as root it runs as the build user tests/isar/run creates (isarbuild) or nobody.
The real build of the example chain is tests/isar/run (README, "Isar").
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Cli, sh

PROJECT = Path(__file__).resolve().parent.parent
ISAR = os.environ.get("TMPL2DEB_ISAR_DIR", "")
MC = "mc:qemuamd64-bookworm"


def bitbake_env(build: Path, *args: str, ok: bool = True) -> str:
    """`bitbake ARGS` in BUILD (set up from the Isar checkout), as a non-root user: its output
    (with ok=False, stdout and stderr of a bitbake that must fail)."""
    user = []
    if os.geteuid() == 0:
        name = "isarbuild" if _has_user("isarbuild") else "nobody"
        user = ["runuser", "-u", name, "--"]
        sh("chown", "-R", name, build.parent)
    script = f". ./isar-init-build-env {build} >/dev/null && bitbake {' '.join(args)}"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "en_US.UTF-8", "HOME": str(build)}
    result = sh(*user, "bash", "-c", f"cd {ISAR} && {script}", env=env, check=False)
    if not ok:
        assert result.returncode != 0, result.stdout[-3000:]
        return f"{result.stdout}{result.stderr}"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out: str = result.stdout
    return out


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.skipif(not ISAR, reason="TMPL2DEB_ISAR_DIR not set (path of an Isar checkout)")
def test_layer_parses_and_wires_the_tasks() -> None:
    # not under pytest's tmp_path: that is private to root, and bitbake runs as another user
    top = Path(tempfile.mkdtemp(prefix="tmpl2deb-isar-parse-", dir="/var/tmp"))
    try:
        _parse(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _setup(top: Path) -> Path:
    """A build directory in TOP with a copy of the layer; return the build directory."""
    build = top / "build"
    layer = top / "layer"
    for name in ("conf", "classes", "lib", "recipes-templates", "tmpl2deb"):
        shutil.copytree(PROJECT / name, layer / name)
    (build / "conf").mkdir(parents=True)
    sample = Path(ISAR) / "meta-isar/conf"
    bblayers = (sample / "bblayers.conf.sample").read_text().replace("##ISARROOT##", ISAR)
    bblayers = bblayers.replace('BBLAYERS ?= "', f'BBLAYERS ?= " {layer} ', 1)
    (build / "conf/bblayers.conf").write_text(bblayers)
    local = (sample / "local.conf.sample").read_text()
    (build / "conf/local.conf").write_text(local + '\nBBMULTICONFIG = "qemuamd64-bookworm"\n')
    return build


def _parse(top: Path) -> None:
    build = _setup(top)
    env = bitbake_env(build, "-e", f"{MC}:app-image")
    assert 'IMAGE_TEMPLATE="tmpl-middleware"' in env
    assert 'IMAGE_TEMPLATE_REMOVE="nano"' in env
    # do_rootfs_install[depends]: the template and the platform's packages published after it
    assert "middleware-template-image:do_image_template_packages" in env
    assert re.search(r"^python rootfs_prepare ?\(\) \{", env, re.MULTILINE)
    # Isar's own rootfs_prepare, called for IMAGE_TEMPLATE_ON_STALE = "full", is Isar's text
    isar = re.search(r"^image_template_isar_rootfs_prepare ?\(\) \{\n(.*?)^\}", env, re.M | re.S)
    assert isar and "chroot-setup.sh" in isar.group(1), "Isar's rootfs_prepare is not kept"
    # one apt-get run downloads, installs and purges, before Isar's locale and initrd steps;
    # what it downloaded is exported to DL_DIR after it; the report of newer versions beside it
    commands = re.search(r'^ROOTFS_INSTALL_COMMAND="([^"]*)"', env, re.MULTILINE)
    assert commands, "no ROOTFS_INSTALL_COMMAND"
    steps = commands.group(1).split()
    replaced = {"rootfs_install_pkgs_download", "rootfs_install_pkgs_isar_download",
                "rootfs_install_pkgs_install", "image_install_localepurge_install"}  # fmt: skip
    assert not replaced & set(steps)
    install = steps.index("image_template_install")
    assert steps[install + 1] == "image_template_export_package_cache"
    assert "rootfs_export_package_cache" not in steps
    assert "image_template_import_package_cache" in steps[:install]
    assert steps.index("image_template_report_start") < install
    assert install < steps.index("image_template_locales")
    assert steps[-1] == "image_template_report_newer"
    env = bitbake_env(build, "-e", f"{MC}:base-template-image")
    assert re.search(r"^python do_image_template_pack ?\(\) \{", env, re.MULTILINE)
    assert 'IMAGE_TEMPLATE_NAME="base"' in env
    # the repository key by URL, as Isar takes DISTRO_APT_KEYS: fetched when parsed, named
    local = build / "conf/local.conf"
    saved = local.read_text()
    key = top / "platform-keyring.gpg"
    key.write_bytes(b"not really a key")
    local.write_text(saved + f'IMAGE_TEMPLATE_KEY = "file://{key}"\n')
    env = bitbake_env(build, "-e", f"{MC}:app-image")
    assert f'IMAGE_TEMPLATE_KEYRING="{key}"' in env
    # a host without what the classes run: one error at parse time naming the package
    local.write_text(saved + 'IMAGE_TEMPLATE_HOST_TOOLS:append = " tmpl2deb-no-such-tool"\n')
    out = bitbake_env(build, "-e", f"{MC}:app-image", ok=False)
    local.write_text(saved)
    assert "the build host lacks what the tmpl2deb classes run" in out, out[-2000:]
    assert "apt-get install tmpl2deb-no-such-tool" in out and "Traceback" not in out, out[-2000:]


PROBE = """\
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
inherit image
inherit image-template-consume
IMAGE_TEMPLATE = "tmpl-small (>= 1.0)"
IMAGE_TEMPLATE_SOURCE = "deb [trusted=yes] file:%s bookworm main"
"""


@pytest.mark.skipif(not ISAR, reason="TMPL2DEB_ISAR_DIR not set (path of an Isar checkout)")
def test_a_new_release_changes_the_signature(cli: Cli, small_tree: Path) -> None:
    """Without IMAGE_TEMPLATE_RECIPE, the template the repository holds now is resolved at
    every parse and is a variable of do_rootfs_install's signature."""
    top = Path(tempfile.mkdtemp(prefix="tmpl2deb-isar-parse-", dir="/var/tmp"))
    try:
        build = _setup(top)
        repo = top / "repo"
        out = top / "out"
        out.mkdir()
        recipe = top / "layer/recipes-templates/images/probe-image.bb"
        recipe.write_text(PROBE % repo)
        resolved = re.compile(r'^IMAGE_TEMPLATE_RESOLVED="([^"]*)"', re.MULTILINE)

        def release(version: str) -> str:
            pack = ("pack", small_tree, "--name", "small", "--arch", "amd64", "-o", out)
            assert cli(*pack, "--version", version) == 0, cli.err
            assert cli("publish", "--repo", repo, cli.out.strip()) == 0, cli.err
            env = bitbake_env(build, "-e", f"{MC}:probe-image")
            found = resolved.search(env)
            assert found, "no IMAGE_TEMPLATE_RESOLVED"
            return found.group(1)

        first = release("1.0")
        assert first.startswith("tmpl-small 1.0 ")
        second = release("1.1")
        assert second.startswith("tmpl-small 1.1 ") and second.split()[2] != first.split()[2]
        # a pinned release stays what it was: the repository keeps it
        recipe.write_text((PROBE % repo).replace("(>= 1.0)", "(= 1.0)"))
        found = resolved.search(bitbake_env(build, "-e", f"{MC}:probe-image"))
        assert found and found.group(1) == first
        recipe.write_text((PROBE % repo).replace("(>= 1.0)", "(= 0.9)"))
        env = bitbake_env(build, "-e", f"{MC}:probe-image")
        assert "unresolved: no version of tmpl-small satisfies tmpl-small (= 0.9)" in env
    finally:
        shutil.rmtree(top, ignore_errors=True)


PACKAGES_PROBE = """\
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
inherit image-template-packages
IMAGE_TEMPLATE_PACKAGES = "%s"
IMAGE_TEMPLATE_PACKAGES_SOURCE = "deb [trusted=yes] file:%s bookworm packages"
"""


@pytest.mark.skipif(not ISAR, reason="TMPL2DEB_ISAR_DIR not set (path of an Isar checkout)")
def test_platform_packages_resolve_into_src_uri(cli: Cli, tmp_path: Path) -> None:
    """image-template-packages: the platform's packages a recipe names are resolved from the
    signed index when parsed, into SRC_URI with their sha256sum; the recipe provides them."""
    from tests.test_repo import package_deb

    top = Path(tempfile.mkdtemp(prefix="tmpl2deb-isar-parse-", dir="/var/tmp"))
    try:
        build = _setup(top)
        repo = top / "repo"
        dev = package_deb(tmp_path, "libtmplhello-dev", "amd64", "1.3")
        publish = ("publish", "--repo", repo, "--codename", "bookworm", "--packages", dev)
        assert cli(*publish) == 0, cli.err
        recipe = top / "layer/recipes-templates/images/probe-packages.bb"
        recipe.write_text(PACKAGES_PROBE % ("libtmplhello-dev (>= 1.0)", repo))
        env = bitbake_env(build, "-e", f"{MC}:probe-packages")
        pooled = repo / "pool/packages/libt/libtmplhello/libtmplhello-dev_1.3_amd64.deb"
        sha256 = hashlib.sha256(pooled.read_bytes()).hexdigest()
        assert f"file://{pooled};sha256sum={sha256};unpack=false" in env
        provides = re.search(r'^PROVIDES="([^"]*)"', env, re.MULTILINE)
        assert provides and "libtmplhello-dev" in provides.group(1).split()
        # bad input: one error in the first task, naming the package and what the source has
        recipe.write_text(PACKAGES_PROBE % ("libtmplhello-dev (>= 2.0)", repo))
        out = bitbake_env(build, "-c", "fetch", f"{MC}:probe-packages", ok=False)
        assert "no version of libtmplhello-dev satisfies libtmplhello-dev (>= 2.0)" in out
        assert "(the source has 1.3)" in out and "Traceback" not in out, out[-2000:]
    finally:
        shutil.rmtree(top, ignore_errors=True)
