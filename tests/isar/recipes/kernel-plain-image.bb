# SPDX-License-Identifier: MIT
# The same image as kernel-image, built the plain way: the platform base and the kernel of
# TMPL2DEB_KERNEL_NAME from the bootstrap (for comparison).

DESCRIPTION = "tmpl2deb acceptance: the kernel image without templates"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image

require recipes-templates/images/base-packages.inc
TMPL2DEB_KERNEL_NAME ??= "${KERNEL_NAME}"
KERNEL_NAME := "${TMPL2DEB_KERNEL_NAME}"
