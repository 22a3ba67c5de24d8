# SPDX-License-Identifier: MIT
# Example chain, step 1: the platform team's base image, also produced as template tmpl-base.
# A realistic platform base (~250 packages): systemd, ssh, python3, network and debugging tools.

DESCRIPTION = "tmpl2deb example: platform base image and template"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image
inherit image-template-produce

IMAGE_TEMPLATE_NAME = "base"
IMAGE_TEMPLATE_FEATURES = "systemd ssh python3 debug-tools"

require base-packages.inc
