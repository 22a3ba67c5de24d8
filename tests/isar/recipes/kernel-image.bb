# SPDX-License-Identifier: MIT
# The kernel developer's image: the platform base from tmpl-base-nokernel, with the kernel
# package of TMPL2DEB_KERNEL_NAME (the kernel under development) installed on top; its initrd
# is generated for it (the template has none to reuse).

DESCRIPTION = "tmpl2deb acceptance: a kernel on top of a kernel-less template"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-consume

IMAGE_TEMPLATE = "tmpl-base-nokernel"
IMAGE_TEMPLATE_RECIPE = "base-nokernel-template-image"
TMPL2DEB_KERNEL_NAME ??= "${KERNEL_NAME}"
KERNEL_NAME := "${TMPL2DEB_KERNEL_NAME}"
