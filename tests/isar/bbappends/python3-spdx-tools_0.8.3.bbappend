# SPDX-License-Identifier: MIT
# Isar's SBOM chroot (generate-sbom, in Isar's default ROOTFS_FEATURES) is built from sources on
# github.com, which the acceptance machine cannot reach: the same release from PyPI (tests/isar/run
# adds this directory to BBFILES).
SRC_URI = "https://files.pythonhosted.org/packages/f1/99/3470b28dc4b64fd29db3b1dcf5e84c743ec88e25ea7b214794f5930f0319/spdx-tools-${PV}.tar.gz \
    file://rules"
SRC_URI[sha256sum] = "68b8f9ce2893b5216bd90b2e63f1c821c2884e4ebc4fd295ebbf1fa8b8a94b93"
S = "${WORKDIR}/spdx-tools-${PV}"
