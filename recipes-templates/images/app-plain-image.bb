# SPDX-License-Identifier: MIT
# The application image of the example chain built the plain Isar way, from the bootstrap:
# base + middleware + application packages (without nano). Used to time the template path.

DESCRIPTION = "tmpl2deb example: the application image without templates"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image

require base-packages.inc
# the application image purges nano (IMAGE_TEMPLATE_REMOVE)
IMAGE_PREINSTALL:remove = "nano"
IMAGE_PREINSTALL += "mosquitto nginx-light python3-paho-mqtt hello"
