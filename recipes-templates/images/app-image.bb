# SPDX-License-Identifier: MIT
# Example chain, step 3: the application image on top of tmpl-middleware: one application
# package added, one package of the base (nano) purged.

DESCRIPTION = "tmpl2deb example: application image, from tmpl-middleware"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-consume

IMAGE_TEMPLATE = "tmpl-middleware"
IMAGE_TEMPLATE_RECIPE = "middleware-template-image"
IMAGE_TEMPLATE_REMOVE = "nano"

IMAGE_PREINSTALL += "hello"
