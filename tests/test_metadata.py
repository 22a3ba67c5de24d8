"""Metadata: names, versions, control fields <-> metadata.json."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from tmpl2deb.errors import MetadataError
from tmpl2deb.metadata import (
    PackageInfo,
    TemplateMetadata,
    check_version,
    deb_filename,
    package_name,
    parent_field,
    render_control,
    rootfs_identity,
)

META = TemplateMetadata(
    package="tmpl-base",
    version="1.2",
    architecture="arm64",
    image="base",
    build_date="2023-11-14T22:13:20Z",
    distro="debian",
    suite="bookworm",
    rootfs_sha256="a" * 64,
    payload_sha256="a" * 64,  # a full template: its rootfs identity is the payload's sha256
    rootfs_size=123456,
    rootfs_files=42,
    packages=7,
    manifest_sha256="b" * 64,
    features=("ssh", "wifi"),
    excludes=("/var/log/*", "!/dev/null", "=/etc/machine-id"),
    parent="tmpl-bsp (= 1.0)",
    signature="abc123",
)


@pytest.mark.parametrize(
    ("name", "package"),
    [("base", "tmpl-base"), ("My_Image", "tmpl-my-image"), ("tmpl-x1", "tmpl-x1")],
)
def test_package_name_convention(name: str, package: str) -> None:
    assert package_name(name) == package


@pytest.mark.parametrize("name", ["", "-x", "a b", "ä", "x/y"])
def test_package_name_rejects(name: str) -> None:
    with pytest.raises(MetadataError, match="name"):
        package_name(name)


def test_deb_filename_drops_epoch() -> None:
    assert deb_filename("tmpl-a", "2:1.0-1", "amd64") == "tmpl-a_1.0-1_amd64.deb"


def test_parent_field() -> None:
    assert parent_field("tmpl-base=1.2") == "tmpl-base (= 1.2)"
    with pytest.raises(MetadataError, match="parent"):
        parent_field("tmpl-base")
    with pytest.raises(MetadataError, match="version"):
        parent_field("tmpl-base=x")


def test_json_round_trip() -> None:
    text = META.to_json()
    assert TemplateMetadata.from_json(text) == META
    data = json.loads(text)
    assert data["features"] == ["ssh", "wifi"]
    assert list(data) == sorted(data)


def test_control_round_trip_through_deb822() -> None:
    from debian.deb822 import Deb822

    control = render_control(META, PackageInfo(installed_size=10))
    para = Deb822(control.decode())
    assert "Depends" not in para
    assert para["Template-Parent"] == "tmpl-bsp (= 1.0)"
    assert TemplateMetadata.from_control(para) == META


def test_optional_fields_absent_from_control() -> None:
    meta = replace(META, parent="", signature="", features=())
    fields = meta.control_fields()
    assert "Template-Parent" not in fields and "Template-Features" not in fields


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "one"}, "version"),
        ({"package": "Tmpl"}, "package"),
        ({"rootfs_sha256": "xyz"}, "rootfs_sha256"),
        ({"excludes": ("var/log",)}, "excludes"),
        ({"format": 3}, "format"),
        ({"payload_sha256": ""}, "payload_sha256"),
        ({"payload_sha256": "c" * 64}, "rootfs_sha256"),  # not the identity it gives
        ({"format": 1}, "payload_sha256"),  # format 1 records none
        ({"distro": "a b"}, "distro"),
    ],
)
def test_validation(change: dict[str, object], field: str) -> None:
    with pytest.raises(MetadataError) as err:
        replace(META, **change)  # type: ignore[arg-type]
    assert err.value.field == field


def test_from_json_rejects_unknown_keys() -> None:
    data = json.loads(META.to_json())
    data["surprise"] = 1
    with pytest.raises(MetadataError, match="unknown keys"):
        TemplateMetadata.from_json(json.dumps(data))


def test_from_control_requires_template_format() -> None:
    with pytest.raises(MetadataError, match="not a tmpl2deb template"):
        TemplateMetadata.from_control({"Package": "bash", "Version": "5.2"})


@pytest.mark.parametrize("version", ["1.0-beta-1", "2:1.2-3", "1.0~rc1+dfsg-0.1", "0+20240101.1"])
def test_every_debian_version_is_accepted(version: str) -> None:
    check_version(version)


@pytest.mark.parametrize("version", ["one", "1.0 x", "1.0-", "1:", "", "-1"])
def test_what_dpkg_refuses_is_refused(version: str) -> None:
    with pytest.raises(MetadataError, match="is not a Debian version"):
        check_version(version)


def test_rootfs_identity_of_a_chain() -> None:
    """Format 2: a full template's identity is its payload's sha256; a delta's covers its
    parent's identity too, so one payload changed anywhere in a chain changes the leaf's."""
    full = rootfs_identity("a" * 64)
    assert full == "a" * 64
    delta = rootfs_identity("b" * 64, full)
    assert delta == hashlib.sha256(f"{'a' * 64} {'b' * 64}".encode()).hexdigest()
    assert rootfs_identity("b" * 64, rootfs_identity("c" * 64)) != delta
    old = replace(META, format=1, payload_sha256="", rootfs_sha256="f" * 64)  # still read
    assert TemplateMetadata.from_control(old.control_fields() | {
        "Package": "tmpl-base", "Version": "1.2", "Architecture": "arm64"}) == old  # fmt: skip
