# Build an image from an image template instead of the bootstrap rootfs (tmpl2deb layer).
#
#   inherit image-template-consume
#   IMAGE_TEMPLATE = "tmpl-base (>= 1.2)"    exactly one template package, optional relation
#   IMAGE_TEMPLATE_RECIPE = "base-image"     the recipe making it in this build (optional)
#   IMAGE_TEMPLATE_SOURCE = "deb [signed-by=/etc/keyrings/platform.gpg] https://... bookworm main"
#                                            (default: this build's template repository)
#   IMAGE_TEMPLATE_REMOVE = "tzdata"         packages of the template to purge
#   IMAGE_TEMPLATE_ON_STALE = "fail"         fail | warn | full (see below)
#
# The first step of do_rootfs_install (rootfs_prepare) installs the template package with
# apt-get into a staging root (tmpl2deb stage: never the host's dpkg), checks its
# architecture, distro and suite, and unpacks it as ${ROOTFSDIR}. It restores the build's own
# apt sources and package lists from the bootstrap (the template carries none), and does not
# run chroot-setup.sh again (the template was captured with its state, which
# do_rootfs_finalize cleans up). Then Isar's package installation runs as usual, after a full
# apt-get update: IMAGE_PREINSTALL and IMAGE_INSTALL (from isar-apt too) are installed on top,
# and IMAGE_TEMPLATE_REMOVE purged.
#
# Staleness: with IMAGE_TEMPLATE_RECIPE, do_rootfs_install depends on that recipe's template
# task, and the signature the template records must be that recipe's current
# do_rootfs_install hash. If it is not (the repository holds a template made from other
# inputs): "fail" stops with an error naming both signatures and what changed between them (from
# the sigdata bitbake keeps in the stamps directory, as bitbake-diffsigs prints it), "warn"
# builds on it anyway, "full" falls back to a full build from the bootstrap with the template's
# packages. Another architecture, distro or suite is always refused, whatever the policy.

inherit image-template-common

IMAGE_TEMPLATE ??= ""
IMAGE_TEMPLATE_RECIPE ??= ""
IMAGE_TEMPLATE_REMOVE ??= ""
IMAGE_TEMPLATE_ON_STALE ??= "fail"
IMAGE_TEMPLATE_SOURCE ??= "deb [${@'signed-by=' + d.getVar('IMAGE_TEMPLATE_REPO') + '/archive-keyring.gpg' if d.getVar('IMAGE_TEMPLATE_SIGN_KEY') else 'trusted=yes'}] file://${IMAGE_TEMPLATE_REPO} ${IMAGE_TEMPLATE_CODENAME} main"
IMAGE_TEMPLATE_STAGING = "${WORKDIR}/image-template-staging"

python __anonymous() {
    spec = (d.getVar("IMAGE_TEMPLATE") or "").strip()
    pn = d.getVar("PN")
    if not spec:
        bb.fatal("%s inherits image-template-consume but IMAGE_TEMPLATE is empty" % pn)
    if "," in spec or "|" in spec or len(spec.split("(")[0].split()) != 1:
        bb.fatal("%s: IMAGE_TEMPLATE = \"%s\" names more than one template; an image is built "
                 "from exactly one (e.g. \"tmpl-base (>= 1.2)\")" % (pn, spec))
    d.setVar("IMAGE_TEMPLATE_PACKAGE", spec.split("(")[0].split("=")[0].strip())
    policy = d.getVar("IMAGE_TEMPLATE_ON_STALE")
    if policy not in ("fail", "warn", "full"):
        bb.fatal("%s: IMAGE_TEMPLATE_ON_STALE = \"%s\": use fail, warn or full" % (pn, policy))
    recipe = d.getVar("IMAGE_TEMPLATE_RECIPE")
    if recipe:
        d.appendVarFlag("do_rootfs_install", "depends", " %s:do_image_template_pack" % recipe)
    # the purge belongs to the package installation, before Isar's locale and initrd steps
    cmds = (d.getVar("ROOTFS_INSTALL_COMMAND") or "").split()
    after = "rootfs_install_pkgs_install"
    cmds.insert(cmds.index(after) + 1 if after in cmds else len(cmds), "image_template_purge")
    d.setVar("ROOTFS_INSTALL_COMMAND", " ".join(cmds))
}

# rootfs_prepare is called from a list in do_rootfs_install: name it, and what it reads.
do_rootfs_install[vardeps] += "rootfs_prepare image_template_stage image_template_bootstrap \
    IMAGE_TEMPLATE IMAGE_TEMPLATE_SOURCE IMAGE_TEMPLATE_REMOVE IMAGE_TEMPLATE_ON_STALE"
do_rootfs_install[network] = "${TASK_USE_SUDO}"

python rootfs_prepare() {
    import json, os
    recipe = d.getVar("IMAGE_TEMPLATE_RECIPE")
    # the signature a template made by IMAGE_TEMPLATE_RECIPE in this build must record
    expected = image_template_rootfs_hash(d, recipe)
    if recipe and not expected:
        bb.fatal("no task hash of %s:do_rootfs_install" % recipe)
    policy = d.getVar("IMAGE_TEMPLATE_ON_STALE")
    bb.build.exec_func("image_template_stage", d)
    staging = d.getVar("IMAGE_TEMPLATE_STAGING")
    # a delta template comes with its parents: the one named in IMAGE_TEMPLATE is the image's
    path = os.path.join(staging, "usr/share/tmpl2deb/templates",
                        d.getVar("IMAGE_TEMPLATE_PACKAGE"), "metadata.json")
    with open(path) as f:
        meta = json.load(f)
    if expected and meta["signature"] != expected:
        stale = ("template %s %s is stale: it was made by %s:do_rootfs_install %s, this build "
                 "has %s\n%s" % (meta["package"], meta["version"], recipe,
                 meta["signature"] or "(no signature)", expected,
                 image_template_changes(d, meta["signature"], expected)))
        if policy == "fail":
            bb.fatal("%s\nBuild and publish it again (bitbake %s), or set "
                     "IMAGE_TEMPLATE_ON_STALE to \"warn\" or \"full\"" % (stale, recipe))
        if policy == "warn":
            bb.warn(stale + "\nBuilding on it anyway (IMAGE_TEMPLATE_ON_STALE = \"warn\")")
        else:
            bb.warn(stale + "\nFull build from the bootstrap with its packages "
                    "(IMAGE_TEMPLATE_ON_STALE = \"full\")")
            with open(os.path.join(os.path.dirname(path), "manifest")) as f:
                names = [line.split()[0] for line in f if line.strip()]
            d.appendVar("ROOTFS_PACKAGES", " " + " ".join(names))
            bb.build.exec_func("image_template_bootstrap", d)
            return
    with open(d.expand("${WORKDIR}/image-template-parent"), "w") as f:
        f.write("--parent=%s=%s --parent-sha256=%s\n"
                % (meta["package"], meta["version"], meta["rootfs_sha256"]))
    # for image-template-produce with IMAGE_TEMPLATE_DELTA: the parent to make a delta of
    with open(d.expand("${WORKDIR}/image-template-delta"), "w") as f:
        f.write("--delta-from=%s --delta-package=%s\n" % (staging, meta["package"]))
    bb.build.exec_func("image_template_unpack", d)
}
rootfs_prepare[vardepsexclude] += "BB_TASKDEPDATA"

# What changed between the inputs of two signatures (task hashes), from the sigdata files
# bitbake keeps in the stamps directory, as bitbake-diffsigs would print it.
def image_template_changes(d, old, new):
    import glob, os
    stamps = d.getVar("STAMPS_DIR")
    found = {}

    def sigdata(taskhash):
        if taskhash not in found:
            paths = glob.glob(os.path.join(glob.escape(stamps), "**", "*.sigdata." + taskhash),
                              recursive=True)
            found[taskhash] = paths[0] if paths else None
        return found[taskhash]

    def lines(a, b, indent=""):
        return [indent + line for change in bb.siggen.compare_sigfiles(a, b, recurse)
                for line in change.splitlines()]

    def recurse(task, hash1, hash2):
        a, b = sigdata(hash1), sigdata(hash2)
        if not (a and b):
            return ["    (no record of %s %s in %s)" % (task, hash1 if not a else hash2, stamps)]
        return lines(a, b, "    ")

    if not old or not sigdata(old):
        return ("This build tree has no record of what %s was made from: the template comes "
                "from another build" % (old or "a template without signature"))
    if not sigdata(new):
        return "No record of the inputs of %s in %s" % (new, stamps)
    changes = lines(sigdata(old), sigdata(new))
    if len(changes) > 40:
        changes = changes[:40] + ["... (%d more lines: bitbake-diffsigs %s %s)"
                                  % (len(changes) - 40, sigdata(old), sigdata(new))]
    return "What changed since (bitbake-diffsigs):\n" + "\n".join(changes)
image_template_changes[vardepsexclude] = "STAMPS_DIR"

image_template_stage() {
    sudo rm -rf "${IMAGE_TEMPLATE_STAGING}" "${WORKDIR}/image-template-parent" \
        "${WORKDIR}/image-template-delta"
    sudo ${TMPL2DEB} stage --source "${IMAGE_TEMPLATE_SOURCE}" --arch "${DISTRO_ARCH}" \
        --distro "${BASE_DISTRO}" --suite "${BASE_DISTRO_CODENAME}" \
        "${IMAGE_TEMPLATE}" "${IMAGE_TEMPLATE_STAGING}"
}

image_template_unpack() {
    sudo ${TMPL2DEB} unpack --package "${IMAGE_TEMPLATE_PACKAGE}" "${IMAGE_TEMPLATE_STAGING}" \
        "${ROOTFSDIR}"
    # the build's own apt sources, preferences and package lists, as the bootstrap set them
    sudo tar -xf "${BOOTSTRAP_SRC}" -C "${ROOTFSDIR}" --wildcards \
        './etc/apt/sources.list.d/*' './etc/apt/preferences.d/*' './var/lib/apt/lists/*' \
        ./etc/locale.gen
    # image_install_localepurge_install is not idempotent: it appends to locale.gen (restored
    # from the bootstrap above) and links /etc/locale.conf (made again by it).
    sudo rm -f "${ROOTFSDIR}/etc/locale.conf"
}

# Isar's own rootfs_prepare, for IMAGE_TEMPLATE_ON_STALE = "full"
image_template_bootstrap() {
    sudo tar -xf "${BOOTSTRAP_SRC}" -C "${ROOTFSDIR}" --exclude="./dev/console"
    sudo "${ROOTFSDIR}/chroot-setup.sh" "setup" "${ROOTFSDIR}"
}

# A full apt-get update (Isar refreshes only isar-apt), with the build's resolv.conf, which
# rootfs_install_clean_files removes again. No Translation files: the bootstrap has none,
# and an image build does not read them (6 MB and a second of parsing for bookworm).
ROOTFS_INSTALL_COMMAND =+ "image_template_apt_update"
image_template_apt_update() {
    if [ -z "${BB_NO_NETWORK}" ] || [ "${BB_NO_NETWORK}" = "0" ]; then
        sudo cp -rL /etc/resolv.conf '${ROOTFSDIR}/etc'
    fi
    sudo -E chroot '${ROOTFSDIR}' /usr/bin/apt-get -o Acquire::Languages=none update
    image_template_report_newer
}

# What the build's apt sources have newer than the template (apt's own simulation): a
# template from another team may lag behind the mirror. A warning, the build goes on.
image_template_report_newer() {
    newer=$(sudo -E chroot '${ROOTFSDIR}' /usr/bin/apt-get --simulate -q dist-upgrade \
        | sed -n 's/^Inst \([^ ]*\) \[\([^]]*\)\] (\([^ ]*\) .*/\1 \2 -> \3/p' \
        | awk '$2 != $4')
    if [ -n "$newer" ]; then
        bbwarn "${IMAGE_TEMPLATE}: $(echo "$newer" | wc -l) packages of the template have" \
            "newer versions in the build's apt sources: $(echo "$newer" | head -20 | tr '\n' ',')"
    fi
}

# (put right after rootfs_install_pkgs_install by __anonymous above)
image_template_purge() {
    if [ -n "${IMAGE_TEMPLATE_REMOVE}" ]; then
        sudo -E chroot '${ROOTFSDIR}' /usr/bin/apt-get purge --yes --autoremove \
            ${IMAGE_TEMPLATE_REMOVE}
    fi
}
