# SPDX-License-Identifier: MIT
# Isar's SBOM chroot (generate-sbom, in Isar's default ROOTFS_FEATURES) is built from sources on
# github.com, which the acceptance machine cannot reach: the same release from PyPI (tests/isar/run
# adds this directory to BBFILES).
SRC_URI = "https://files.pythonhosted.org/packages/6f/e1/00515b97afa3993b4a314e4bc168fbde0917fd5845435cb6f16a19770746/beartype-${PV}.tar.gz \
    file://rules"
SRC_URI[sha256sum] = "de42dfc1ba5c3710fde6c3002e3bd2cad236ed4d2aabe876345ab0b4234a6573"
S = "${WORKDIR}/beartype-${PV}"
