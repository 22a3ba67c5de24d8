# SPDX-License-Identifier: MIT
# tests/isar/run only: the application image from tmpl-middleware plus busybox, whose
# initramfs hook changes the initrd: it must be generated again, not reused.

DESCRIPTION = "tmpl2deb acceptance: application image whose packages change the initrd"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-consume

IMAGE_TEMPLATE = "tmpl-middleware"
IMAGE_TEMPLATE_RECIPE = "middleware-template-image"
IMAGE_TEMPLATE_REMOVE = "nano"

IMAGE_PREINSTALL += "hello busybox"
