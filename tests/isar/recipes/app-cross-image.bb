# SPDX-License-Identifier: MIT
# The application team's own package (tmplhello-app, Isar's dpkg class: cross-built with
# ISAR_CROSS_COMPILE for a foreign machine) in an image from tmpl-middleware.

DESCRIPTION = "tmpl2deb acceptance: an application package of its own on a template"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-consume

IMAGE_TEMPLATE = "tmpl-middleware"
IMAGE_TEMPLATE_RECIPE = "middleware-template-image"
IMAGE_INSTALL += "tmplhello-app"
