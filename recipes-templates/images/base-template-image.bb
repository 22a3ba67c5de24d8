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

# Isar's post-processing requires it with openssh-server: host keys are made on first boot.
# libtmplhello1: the platform's own library (recipes-templates/libtmplhello; its -dev package
# is published with the template, for the application teams).
IMAGE_INSTALL += "sshd-regen-keys libtmplhello1"

IMAGE_PREINSTALL += " \
    systemd systemd-sysv dbus udev kmod iproute2 iputils-ping ifupdown isc-dhcp-client \
    net-tools ethtool openssh-server curl wget ca-certificates less vim-tiny nano procps \
    psmisc htop strace gdb tcpdump lsof file sudo bash-completion rsync jq python3 \
    python3-yaml python3-requests git usbutils pciutils i2c-tools systemd-timesyncd cron \
    logrotate tree zstd unzip"
