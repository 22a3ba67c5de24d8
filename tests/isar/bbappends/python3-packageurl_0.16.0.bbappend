# SPDX-License-Identifier: MIT
# Isar's SBOM chroot (generate-sbom, in Isar's default ROOTFS_FEATURES) is built from sources on
# github.com, which the acceptance machine cannot reach: the same release from PyPI (tests/isar/run
# adds this directory to BBFILES).
SRC_URI = "https://files.pythonhosted.org/packages/68/7d/0bd319dc94c7956b4d864e87d3dc03739f125ce174671e3128edd566a63e/packageurl_python-${PV}.tar.gz \
    file://rules"
