# SPDX-License-Identifier: MIT
# tests/isar/run only: an application image built from a released template that a
# repository serves over HTTP (no IMAGE_TEMPLATE_RECIPE: the template is resolved from the
# repository's signed index when bitbake parses, and is part of the task signature).

DESCRIPTION = "tmpl2deb acceptance: application image from a released template"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-consume

IMAGE_TEMPLATE = "tmpl-platform (>= 1.0)"
IMAGE_TEMPLATE_SOURCE = "${TMPL2DEB_RELEASE_SOURCE}"
TMPL2DEB_RELEASE_SOURCE ??= ""

IMAGE_PREINSTALL += "hello"
# the application team's own package, built against the platform's libtmplhello-dev, and that
# -dev package, which the template does not contain
IMAGE_INSTALL += "tmplhello-app libtmplhello-dev"
