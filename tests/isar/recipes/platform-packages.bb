# SPDX-License-Identifier: MIT
# The application team's build takes the platform's libtmplhello-dev from the platform's
# template repository (the packages its build published with the templates).

DESCRIPTION = "tmpl2deb acceptance: the platform's packages an application team builds against"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image-template-packages

IMAGE_TEMPLATE_PACKAGES = "libtmplhello-dev"
IMAGE_TEMPLATE_PACKAGES_SOURCE = "${TMPL2DEB_PLATFORM_PACKAGES_SOURCE}"
TMPL2DEB_PLATFORM_PACKAGES_SOURCE ??= ""
