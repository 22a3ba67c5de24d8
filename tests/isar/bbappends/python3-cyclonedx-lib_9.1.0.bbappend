# SPDX-License-Identifier: MIT
# Isar's SBOM chroot (generate-sbom, in Isar's default ROOTFS_FEATURES) is built from sources on
# github.com, which the acceptance machine cannot reach: the same release from PyPI (tests/isar/run
# adds this directory to BBFILES).
SRC_URI = "https://files.pythonhosted.org/packages/66/fc/abaad5482f7b59c9a0a9d8f354ce4ce23346d582a0d85730b559562bbeb4/cyclonedx_python_lib-${PV}.tar.gz \
    file://rules file://pybuild.testfiles"
