# SPDX-License-Identifier: MIT
# tmpl2deb acceptance: an application image from a template handed over as a file (SRC_URI
# with its sha256sum), without a repository
DESCRIPTION = "tmpl2deb acceptance: application image from a template in SRC_URI"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-consume

IMAGE_TEMPLATE = "tmpl-platform (>= 1.1)"
SRC_URI += "${TMPL2DEB_FILE_TEMPLATE}"
TMPL2DEB_FILE_TEMPLATE ??= ""

IMAGE_PREINSTALL += "hello"
