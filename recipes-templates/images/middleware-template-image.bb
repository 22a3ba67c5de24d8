# SPDX-License-Identifier: MIT
# Example chain, step 2: the middleware team's image on top of tmpl-base, produced in turn as
# template tmpl-middleware (its parent, tmpl-base, is recorded).

DESCRIPTION = "tmpl2deb example: middleware image and template, from tmpl-base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-consume
inherit image-template-produce

IMAGE_TEMPLATE = "tmpl-base (>= 1.0)"
IMAGE_TEMPLATE_RECIPE = "base-template-image"
IMAGE_TEMPLATE_NAME = "middleware"
IMAGE_TEMPLATE_FEATURES = "mqtt web"

IMAGE_PREINSTALL += "mosquitto nginx-light python3-paho-mqtt"

# shipped as a delta of tmpl-base: a few MB instead of the whole rootfs again
IMAGE_TEMPLATE_DELTA = "1"
