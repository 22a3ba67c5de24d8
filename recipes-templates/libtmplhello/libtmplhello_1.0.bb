# SPDX-License-Identifier: MIT
# Example chain: a library of the platform's own, built in this build (Isar's dpkg class, in
# sbuild). The base image installs libtmplhello1; libtmplhello-dev is not in any image, it is
# published with the templates (image-template-produce) for the application teams, who build
# their own packages against it (image-template-packages).

DESCRIPTION = "tmpl2deb example: a platform library with a -dev package"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"

SRC_URI = "file://src"
S = "${WORKDIR}/src"
PROVIDES += "libtmplhello1 libtmplhello-dev"

inherit dpkg
