# SPDX-License-Identifier: MIT
# The kernel developer's template: the platform base without a kernel (KERNEL_NAME = ""; Isar
# then installs no linux-image package, copies no kernel and makes no initrd), as
# tmpl-base-nokernel. The images made from it install their kernel on top.

DESCRIPTION = "tmpl2deb acceptance: platform base template without a kernel"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-produce

IMAGE_TEMPLATE_NAME = "base-nokernel"
KERNEL_NAME = ""

require recipes-templates/images/base-packages.inc
