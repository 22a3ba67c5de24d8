# SPDX-License-Identifier: MIT
# The application image of the example chain built the plain Isar way, from the bootstrap:
# base + middleware + application packages (without nano). Used to time the template path.

DESCRIPTION = "tmpl2deb example: the application image without templates"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${LAYERDIR_core}/licenses/COPYING.MIT;md5=838c366f69b72c5df05c96dff79b35f2"
PV = "1.0"

inherit image

# Isar's post-processing requires it with openssh-server: host keys are made on first boot.
IMAGE_INSTALL += "sshd-regen-keys libtmplhello1"

IMAGE_PREINSTALL += " \
    systemd systemd-sysv dbus udev kmod iproute2 iputils-ping ifupdown isc-dhcp-client \
    net-tools ethtool openssh-server curl wget ca-certificates less vim-tiny procps \
    psmisc htop strace gdb tcpdump lsof file sudo bash-completion rsync jq python3 \
    python3-yaml python3-requests git usbutils pciutils i2c-tools systemd-timesyncd cron \
    logrotate tree zstd unzip \
    mosquitto nginx-light python3-paho-mqtt \
    hello"
