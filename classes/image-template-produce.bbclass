# SPDX-License-Identifier: MIT
# Produce an image template from an image recipe (tmpl2deb layer).
#
# A task after the packages are installed (do_rootfs_install) and before Isar's
# post-processing (do_rootfs_postprocess) packs ${IMAGE_ROOTFS} into tmpl-<name>.deb and
# publishes it into the template repository of this build (${IMAGE_TEMPLATE_REPO}). The image
# build goes on unchanged. The template is the tree as Isar has it at that point, with the
# chroot-setup state a consumer relies on; what only this build needed (isar-apt, apt lists and
# caches, Isar's apt settings and credentials) is left out.
#
#   inherit image-template-produce
#   IMAGE_TEMPLATE_NAME = "base"            (default: ${PN})
#   IMAGE_TEMPLATE_VERSION = "1.2"          (default: ${PV})
#   IMAGE_TEMPLATE_FEATURES = "ssh python"  (recorded as Template-Features)
#   IMAGE_TEMPLATE_EXCLUDES = "/srv/scratch/*"  (more tmpl2deb exclude patterns)
#   IMAGE_TEMPLATE_DELTA = "1"              (default: 0) when the image itself was built from
#       a template (image-template-consume): ship the template as a tar delta of that parent
#       template, which it then depends on; apt fetches the chain by itself. Falls back to a
#       full template, with a warning, when a delta does not pay off.
#
#   IMAGE_TEMPLATE_PUBLISH_PACKAGES = "0"    (default: 1) do not publish the packages this
#       build made (see below)
#
# The packages this build made, what it put in isar-apt, go into the template repository
# too, in a component of their own ("packages", every version kept): an application team's
# build installs those the template lacks, and builds its own packages against the
# platform's -dev packages (image-template-packages).
#
# The build signature recorded is the task hash of this recipe's do_rootfs_install: it
# changes with IMAGE_INSTALL/IMAGE_PREINSTALL, the packages built for the image, DISTRO and
# DISTRO_ARCH. image-template-consume compares it.

inherit image-template-common

IMAGE_TEMPLATE_NAME ?= "${PN}"
IMAGE_TEMPLATE_VERSION ?= "${PV}"
IMAGE_TEMPLATE_FEATURES ?= ""
IMAGE_TEMPLATE_EXCLUDES ?= ""
IMAGE_TEMPLATE_DELTA ?= "0"
IMAGE_TEMPLATE_PUBLISH_PACKAGES ?= "1"
# Isar's build-time apt files, and the ssh host keys: secrets of one device, not of every
# image made from the template (sshd-regen-keys makes them on first boot).
IMAGE_TEMPLATE_ISAR_EXCLUDES = "/etc/apt/preferences.d/* /etc/apt/apt.conf.d/50isar \
    /etc/apt/auth.conf.d/* /isar-apt /isar-work /base-apt /etc/ssh/ssh_host_*"
IMAGE_TEMPLATE_OUT = "${WORKDIR}/image-template"
# publish: reprepro, and gpg to sign
IMAGE_TEMPLATE_HOST_TOOLS:append = " reprepro ${@'gpg' if d.getVar('IMAGE_TEMPLATE_SIGN_KEY') else ''}"

python do_image_template_pack() {
    signature = image_template_rootfs_hash(d, d.getVar("PN"))
    if not signature:
        bb.fatal("image-template-produce: no task hash for do_rootfs_install of %s" % d.getVar("PN"))
    d.setVar("IMAGE_TEMPLATE_SIGNATURE", signature)
    bb.build.exec_func("image_template_initrd_prepare", d)
    # for the images made from the template: the locales it went through Isar's step with
    with open(d.expand("${WORKDIR}/image-template-locales"), "w") as f:
        f.write(image_template_locale_record(d))
    bb.build.exec_func("image_template_localepurge_keep", d)
    d.setVar("IMAGE_TEMPLATE_PARENT_ARGS", " ".join(image_template_parent_args(d)))
    bb.build.exec_func("image_template_pack", d)
}

# The parent of a template made from an image that was itself built from a template: the one
# the image records (IMAGE_TEMPLATE_RECORD, written by image-template-consume; in the rootfs,
# so also when do_rootfs_install came from sstate). With IMAGE_TEMPLATE_DELTA, the delta is
# made against that parent as staged for the image (IMAGE_TEMPLATE_STAGING).
def image_template_parent_args(d):
    import os
    from debian.deb822 import Deb822
    path = d.getVar("IMAGE_ROOTFS") + d.getVar("IMAGE_TEMPLATE_RECORD")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        record = Deb822(f)
    package = record["Template-Package"]
    args = ["--parent=%s=%s" % (package, record["Template-Version"]),
            "--parent-sha256=%s" % record["Template-Rootfs-Sha256"]]
    if d.getVar("IMAGE_TEMPLATE_DELTA") == "1":
        args += ["--delta-from=%s" % d.getVar("IMAGE_TEMPLATE_DELTA_FROM"),
                 "--delta-package=%s" % package]
    return args
image_template_parent_args[vardepsexclude] = "IMAGE_TEMPLATE_DELTA_FROM"
do_image_template_pack[vardeps] += "image_template_pack image_template_initrd_prepare \
    image_template_localepurge_keep image_template_parent_args IMAGE_TEMPLATE_DELTA"
IMAGE_TEMPLATE_PARENT_ARGS = ""

# localepurge's script, so that an image made from the template with the same locales need not
# download the package: from the one Isar's locale step downloaded into this rootfs; a rootfs
# made from a template with the same locales has it already; else the one in DL_DIR
image_template_localepurge_keep() {
    lp=$(ls "${IMAGE_ROOTFS}"/var/cache/apt/archives/localepurge_*.deb 2>/dev/null | tail -1 || true)
    if [ -z "$lp" ] && [ ! -e "${IMAGE_ROOTFS}${IMAGE_TEMPLATE_LOCALEPURGE}" ]; then
        lp=$(ls "${DEBDIR}/${ROOTFS_BASE_DISTRO}-${BASE_DISTRO_CODENAME}"/localepurge_*.deb \
            2>/dev/null | tail -1 || true)
    fi
    if [ -n "$lp" ]; then
        dpkg-deb --fsys-tarfile "$lp" | tar -x -O ./usr/sbin/localepurge \
            > "${IMAGE_TEMPLATE_OUT}/localepurge"
        sudo install -D -m 0644 "${IMAGE_TEMPLATE_OUT}/localepurge" \
            "${IMAGE_ROOTFS}${IMAGE_TEMPLATE_LOCALEPURGE}"
        rm "${IMAGE_TEMPLATE_OUT}/localepurge"
    fi
    [ -s "${IMAGE_ROOTFS}${IMAGE_TEMPLATE_LOCALEPURGE}" ] || \
        bbwarn "no localepurge package found: images made from this template download it again"
}
do_image_template_pack[network] = "${TASK_USE_SUDO}"
do_image_template_pack[cleandirs] = "${IMAGE_TEMPLATE_OUT}"
do_image_template_pack[lockfiles] = "${IMAGE_TEMPLATE_REPO_LOCK}"
addtask image_template_pack after do_rootfs_install before do_rootfs_postprocess

image_template_pack[progress] = "custom:tmpl2deb_progress.Percent"
image_template_pack() {
    set -f  # exclude patterns hold wildcards for tmpl2deb, not for this shell
    excludes=""
    for pattern in ${IMAGE_TEMPLATE_ISAR_EXCLUDES} ${IMAGE_TEMPLATE_EXCLUDES}; do
        excludes="$excludes --exclude=$pattern"
    done
    features=""
    for feature in ${IMAGE_TEMPLATE_FEATURES}; do
        features="$features --feature=$feature"
    done
    sudo install -D -m 0644 "${WORKDIR}/image-template-locales" \
        "${IMAGE_ROOTFS}/var/lib/tmpl2deb/locales"
    deb=$(sudo SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH}" ${TMPL2DEB} pack "${IMAGE_ROOTFS}" \
        --name "${IMAGE_TEMPLATE_NAME}" --version "${IMAGE_TEMPLATE_VERSION}" \
        --arch "${DISTRO_ARCH}" --signature "${IMAGE_TEMPLATE_SIGNATURE}" \
        $features $excludes ${IMAGE_TEMPLATE_PARENT_ARGS} --output "${IMAGE_TEMPLATE_OUT}")
    sudo chown "$(id -u):$(id -g)" "$deb"
    sign=""
    if [ -n "${IMAGE_TEMPLATE_SIGN_KEY}" ]; then
        sign="--sign-with ${IMAGE_TEMPLATE_SIGN_KEY}"
    fi
    mkdir -p "${IMAGE_TEMPLATE_REPO}"
    # --force: this build's repository holds what this build made last, whatever its version
    ${TMPL2DEB} publish --force --repo "${IMAGE_TEMPLATE_REPO}" \
        --codename "${IMAGE_TEMPLATE_CODENAME}" $sign "$deb"
}

# the packages of this build's isar-apt, published next to the template (after it: a
# consumer in this build waits for the template only)
do_image_template_packages() {
    if [ "${IMAGE_TEMPLATE_PUBLISH_PACKAGES}" != "1" ]; then
        return 0
    fi
    debs=$(find "${REPO_ISAR_DIR}/${DISTRO}/pool" -name '*.deb' 2>/dev/null | sort)
    if [ -z "$debs" ]; then
        bbnote "isar-apt holds no package of this build: none published"
        return 0
    fi
    sign=""
    if [ -n "${IMAGE_TEMPLATE_SIGN_KEY}" ]; then
        sign="--sign-with ${IMAGE_TEMPLATE_SIGN_KEY}"
    fi
    # --force: what this build made last, as for its templates
    ${TMPL2DEB} publish --packages --force --repo "${IMAGE_TEMPLATE_REPO}" \
        --codename "${IMAGE_TEMPLATE_CODENAME}" $sign $debs
}
do_image_template_packages[lockfiles] = "${REPO_ISAR_DIR}/isar.lock ${IMAGE_TEMPLATE_REPO_LOCK}"
addtask image_template_packages after do_image_template_pack before do_rootfs_postprocess
