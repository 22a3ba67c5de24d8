# SPDX-License-Identifier: MIT
# Shared by image-template-produce and image-template-consume (tmpl2deb layer).
# (tmpl2deb itself, the host check and reading a platform's apt source: image-template-base)

inherit image-template-base

# The template repository of this build (base-apt layout, every release kept), one per DISTRO.
IMAGE_TEMPLATE_REPO ?= "${DEPLOY_DIR}/image-templates/${DISTRO}"
IMAGE_TEMPLATE_CODENAME ?= "${BASE_DISTRO_CODENAME}"
# gpg key id to sign the repository with (GNUPGHOME of the build user); empty: unsigned.
IMAGE_TEMPLATE_SIGN_KEY ?= ""
IMAGE_TEMPLATE_REPO_LOCK = "${DEPLOY_DIR}/image-templates/${DISTRO}.lock"

# The staging root (apt state and the .debs apt fetched) persists in TMPDIR, past a clean of
# the image: a rebuild fetches again only what the signed index names differently (stage keeps
# a .deb it checked against the sha256 the index still gives). It is this build directory's
# (not DL_DIR's, which other build directories share): the template task of the image makes
# its delta against the parent staged here, which no other build may replace meanwhile.
IMAGE_TEMPLATE_STAGING = "${TMPDIR}/image-templates/staging/${DISTRO}-${DISTRO_ARCH}/${PN}"
# An image made from a template records it in IMAGE_TEMPLATE_RECORD (deb822 fields:
# Template-Package, Template-Version, Template-Rootfs-Sha256, ...): the device can tell, and a
# template made from the image (image-template-produce) names it as its parent from there.
IMAGE_TEMPLATE_RECORD = "/usr/share/tmpl2deb/built-from"
# what a template made from such an image is a delta of (IMAGE_TEMPLATE_DELTA): the parent
# as staged, or as fetched (a template in SRC_URI)
IMAGE_TEMPLATE_DELTA_FROM ?= "${IMAGE_TEMPLATE_STAGING}"

def image_template_rootfs_hash(d, pn):
    """The task hash of PN's do_rootfs_install as the running task sees it (empty while
    parsing, or when the task does not depend on it): a template's build signature."""
    for entry in (d.getVar("BB_TASKDEPDATA", False) or {}).values():
        if pn and entry[0] == pn and entry[1] == "do_rootfs_install":
            return entry[6]
    return ""
image_template_rootfs_hash[vardepsexclude] = "BB_TASKDEPDATA"

# Isar packs the whole rootfs into the sstate object of *every* sstate task of an image:
# SSTATECREATEFUNCS (rootfs.bbclass) is a recipe-wide list, so do_copy_boot_files and
# do_generate_initramfs each pack the 800 MiB rootfs again next to their few MB of output.
# For the images these classes handle, only do_rootfs_install's object holds the rootfs
# (restoring it is all that needs it; rootfs_install_sstate_finalize only unpacks a
# rootfs.tar it finds).
rootfs_install_sstate_prepare:prepend() {
    if [ "${BB_CURRENTTASK}" != "rootfs_install" ]; then
        return 0
    fi
}

# -- the initrd travels with the template -------------------------------------------------------
# A template carries the initrd its image would get (/boot/initrd.img-*, made when it is
# packed) and a record of what it was made from (tmpl2deb initrd: generator, configuration,
# hooks, kernel modules, the files it holds, their packages' versions). An image's
# do_generate_initramfs compares that record with its own rootfs: unchanged, the initrd is
# deployed as it is; changed, Isar generates it again and the log names what changed.

# tmpl2deb initrd ACTION (record, check) on the rootfs; the lines it printed
def image_template_initrd(d, action):
    import subprocess
    argv = ["sudo"] + d.getVar("TMPL2DEB").split() + [
        "initrd", action, "-q", d.getVar("ROOTFSDIR"),
        "--context", "cmdline=" + d.getVar("ROOTFS_INITRAMFS_GENERATOR_CMDLINE"),
        "--context", "epoch=" + (d.getVar("SOURCE_DATE_EPOCH") or "")]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        bb.fatal("tmpl2deb initrd %s: %s" % (action, result.stderr.strip()))
    return result.stdout.splitlines()

def image_template_kernels(d):
    import glob
    if "generate-initrd" not in (d.getVar("ROOTFS_FEATURES") or "").split():
        return []
    return sorted(glob.glob(d.getVar("ROOTFSDIR") + "/boot/vmlinu[xz]-*"))

# In do_generate_initramfs: deploy the initrd of the rootfs if its inputs are unchanged.
def image_template_initrd_reused(d):
    import os, subprocess
    kernels = image_template_kernels(d)
    if not kernels:
        return False
    changed = image_template_initrd(d, "check")
    if changed:
        bb.plain("%s: generating the initrd, its inputs changed: %s%s" % (d.getVar("PN"),
                 ", ".join(changed[:10]), " ..." if len(changed) > 10 else ""))
        return False
    version = os.path.basename(kernels[-1]).split("-", 1)[1]
    initrd = os.path.join(d.getVar("ROOTFSDIR"), "boot", "initrd.img-" + version)
    with open(os.path.join(d.getVar("DEPLOYDIR"), d.getVar("INITRD_DEPLOY_FILE")), "wb") as out:
        subprocess.run(["sudo", "cat", initrd], stdout=out, check=True)
    bb.plain("%s: initrd of the template reused (its recorded inputs are unchanged)"
             % d.getVar("PN"))
    return True

python do_generate_initramfs:prepend() {
    if image_template_initrd_reused(d):
        return
}

# In the template task: make the initrd in the rootfs and record its inputs, unless the
# rootfs already holds one whose inputs are unchanged (a template made from a template).
python image_template_initrd_prepare() {
    if not image_template_kernels(d):
        return
    changed = image_template_initrd(d, "check")
    if not changed:
        bb.note("the initrd in the rootfs is current")
        return
    bb.note("making the initrd for the template: %s" % ", ".join(changed[:10]))
    bb.build.exec_func("rootfs_do_mounts", d)
    bb.build.exec_func("rootfs_do_qemu", d)
    try:
        bb.build.exec_func("image_template_initrd_generate", d)
    finally:
        bb.build.exec_func("rootfs_do_umounts", d)
    image_template_initrd(d, "record")
}

# what Isar's rootfs_generate_initramfs runs in the rootfs, without deploying
image_template_initrd_generate() {
    for kernel in ${ROOTFSDIR}/boot/vmlinu[xz]-*; do
        export kernel_version=$(basename $kernel | cut -d'-' -f2-)
        sudo -E chroot "${ROOTFSDIR}" sh -ec '${ROOTFS_INITRAMFS_GENERATOR_CMDLINE}'
    done
    if [ ! -e "${ROOTFSDIR}/usr/share/doc/qemu-user-static" ]; then
        sudo find "${ROOTFSDIR}/usr/bin" -maxdepth 1 -name 'qemu-*-static' -type f -delete
    fi
}

# the record is for the templates made from the rootfs, not part of the image
do_rootfs_finalize:append() {
    sudo rm -rf "${ROOTFSDIR}/var/lib/tmpl2deb"
}

# where a template carries localepurge's script (for the images made from it: see
# image_template_localepurge in image-template-consume)
IMAGE_TEMPLATE_LOCALEPURGE = "/var/lib/tmpl2deb/localepurge"

# The locale settings a rootfs went through Isar's locale step with (image-locales-extension)
def image_template_locale_record(d):
    return "LOCALE_GEN=%s\nLOCALE_DEFAULT=%s\n" % (get_locale_gen(d, ", "), d.getVar("LOCALE_DEFAULT"))

# The rootfs object of do_rootfs_install is a cache of this build (an image made from a
# template is rebuilt from it in seconds): zstd -8 of the 800 MiB rootfs costs 15-20 s of the
# build on 2 cores for an object about 10 % smaller than at level 1.
SSTATE_ZSTD_CLEVEL = "1"
