# SPDX-License-Identifier: MIT
# The application team's own package (Isar's dpkg class, in sbuild), built against the
# platform's libtmplhello-dev: from the platform's recipe where this build has it, else from
# the platform's packages published next to its templates (platform-packages.bb).

DESCRIPTION = "tmpl2deb acceptance: an application package built against a platform -dev package"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"

SRC_URI = "file://tmplhello-app"
S = "${WORKDIR}/tmplhello-app"
DEPENDS = "libtmplhello-dev"

inherit dpkg
