# SPDX-License-Identifier: MIT
# Isar's SBOM chroot (generate-sbom, in Isar's default ROOTFS_FEATURES) is built from sources on
# github.com, which the acceptance machine cannot reach: the same release from PyPI (tests/isar/run
# adds this directory to BBFILES).
SRC_URI = "https://files.pythonhosted.org/packages/ae/00/b7ab94aa68fedb5ff6230eea4dbb71cbe9a9f1466c9a0063d11f599094ed/debsbom-${PV}.tar.gz \
    file://rules file://0001-Use-old-license-description-in-pyproject.toml.patch"
SRC_URI[sha256sum] = "0261077f8c35fe883a9d3131f324a9a1b5ac54c3e249dd62f26eaaeedef69c88"
S = "${WORKDIR}/debsbom-${PV}"
