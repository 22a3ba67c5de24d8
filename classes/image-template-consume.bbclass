# SPDX-License-Identifier: MIT
# Build an image from an image template instead of the bootstrap rootfs (tmpl2deb layer).
#
#   inherit image-template-consume
#   IMAGE_TEMPLATE = "tmpl-base (>= 1.2)"    exactly one template package, optional relation
#   IMAGE_TEMPLATE_RECIPE = "base-image"     the recipe making it in this build (optional)
#   IMAGE_TEMPLATE_SOURCE = "deb [signed-by=/etc/keyrings/platform.gpg] https://... bookworm main"
#                                            (default: this build's template repository)
#   IMAGE_TEMPLATE_REMOVE = "tzdata"         packages of the template to purge
#   IMAGE_TEMPLATE_ON_STALE = "fail"         fail | warn | full (see below)
#   IMAGE_TEMPLATE_KEY = "https://platform.example.org/archive-keyring.gpg;sha256sum=..."
#       the repository's key, fetched as Isar fetches DISTRO_APT_KEYS (into DL_DIR, checked
#       against its sha256sum); IMAGE_TEMPLATE_SOURCE names it as ${IMAGE_TEMPLATE_KEYRING}:
#       "deb [signed-by=${IMAGE_TEMPLATE_KEYRING}] https://... bookworm main"
#
# Or without a repository, as templates handed over as files (the RFC's route): the template
# .deb in SRC_URI with its sha256sum (file:// or https://), and the parents a delta needs:
#   SRC_URI += "https://platform.example.org/tmpl-base_1.2_amd64.deb;sha256sum=..."
#   IMAGE_TEMPLATE = "tmpl-base (>= 1.2)"
# bitbake fetches it (into DL_DIR: a rebuild needs no network) and checks the sha256sum
# (for file:// this class does); it is unpacked from there, checked as a staged one is.
#
# The first step of do_rootfs_install (rootfs_prepare) has apt-get download the template
# package (and the parents of a delta) into a staging root (tmpl2deb stage: never the host's
# dpkg, no code of the package runs), checks its architecture, distro and suite, and unpacks
# it as ${ROOTFSDIR}, reading the payload from the .deb where apt put it. It restores the build's own
# apt sources and package lists from the bootstrap (the template carries none), and does not
# run chroot-setup.sh again (the template was captured with its state, which
# do_rootfs_finalize cleans up). Then the packages are installed with the bootstrap's package
# lists, as in a plain build: IMAGE_PREINSTALL and IMAGE_INSTALL (from isar-apt too) on top,
# IMAGE_TEMPLATE_REMOVE purged, in one apt-get run (image_template_install below).
#
# A template from a repository (no IMAGE_TEMPLATE_RECIPE) is resolved when bitbake parses
# the recipe: the newest version in IMAGE_TEMPLATE_SOURCE that satisfies IMAGE_TEMPLATE, read
# from its signed index (tmpl2deb resolve), is IMAGE_TEMPLATE_RESOLVED, part of the signature
# of do_rootfs_install: a new release, or other content under the same version, rebuilds the
# image and everything after it; a pinned version stays put. Exactly that template is staged.
# With BB_NO_NETWORK the last one resolved is used. The log names the template, and the image
# records it in ${IMAGE_TEMPLATE_RECORD}.
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
do_rootfs_install[lockfiles] += "${IMAGE_TEMPLATE_STAGING}.lock"

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
    image_template_fetch_key(d)
    recipe = d.getVar("IMAGE_TEMPLATE_RECIPE")
    files = image_template_src_debs(d)
    if files:
        # handed over as files: SRC_URI (its sha256sum) carries their identity
        if recipe:
            bb.fatal("%s: a template in SRC_URI and IMAGE_TEMPLATE_RECIPE: give one of them" % pn)
        image_template_take_files(d, files)
    elif recipe:
        # made in this build: the dependency on its task carries its identity (the task that
        # publishes the platform's packages comes after the template's, and brings it)
        d.appendVarFlag("do_rootfs_install", "depends", " %s:do_image_template_packages" % recipe)
    else:
        # from a repository: which template that is now is part of the signature, resolved
        # at every parse as bitbake does for SRCREV = "${AUTOREV}" (hence not cached)
        d.setVar("BB_DONT_CACHE", "1")
        d.setVar("IMAGE_TEMPLATE_RESOLVED", image_template_resolve(d))
    d.setVar("ROOTFS_INSTALL_COMMAND", " ".join(
        image_template_install_commands((d.getVar("ROOTFS_INSTALL_COMMAND") or "").split())))
    image_template_take_rootfs_prepare(d)
}

# The template .debs in SRC_URI (tmpl-*.deb): (url, local path) each
def image_template_src_debs(d):
    import os
    urls = [u for u in (d.getVar("SRC_URI") or "").split()
            if os.path.basename(u.split(";")[0]).startswith("tmpl-")
            and u.split(";")[0].endswith(".deb")]
    if not urls:
        return []
    fetcher = bb.fetch2.Fetch(urls, d)
    return [(u, fetcher.localpath(u)) for u in urls]

# The one of FILES that is IMAGE_TEMPLATE_PACKAGE is the template, the others its parents;
# do_unpack leaves them where the fetcher put them (not a copy of 260 MB in WORKDIR).
def image_template_take_files(d, files):
    import os
    package = d.getVar("IMAGE_TEMPLATE_PACKAGE")
    mine = [f for f in files if os.path.basename(f[1]).startswith(package + "_")]
    if len(mine) != 1:
        bb.fatal("%s: SRC_URI names %d .debs of %s (%s); give exactly one" % (
            d.getVar("PN"), len(mine), package, " ".join(u for u, _ in files)))
    d.setVar("IMAGE_TEMPLATE_FILE_URL", mine[0][0])
    d.setVar("IMAGE_TEMPLATE_FILE", mine[0][1])
    d.setVar("IMAGE_TEMPLATE_FILE_PARENTS", " ".join(p for u, p in files if u != mine[0][0]))
    d.setVar("IMAGE_TEMPLATE_FILE_URLS", " ".join(u for u, _ in files))
    d.setVar("IMAGE_TEMPLATE_DELTA_FROM", mine[0][1])

python do_unpack:prepend() {
    templates = (d.getVar("IMAGE_TEMPLATE_FILE_URLS") or "").split()
    if templates:
        d.setVar("SRC_URI", " ".join(u for u in d.getVar("SRC_URI").split() if u not in templates))
}

# A file:// template's sha256sum (bitbake checks those of remote URLs when it fetches)
def image_template_check_files(d):
    import hashlib
    for url, path in image_template_src_debs(d):
        params = dict(p.split("=", 1) for p in url.split(";")[1:] if "=" in p)
        if not url.startswith("file:") or "sha256sum" not in params:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != params["sha256sum"]:
            bb.fatal("%s: sha256sum mismatch: SRC_URI gives %s, the file has %s"
                     % (path, params["sha256sum"], digest.hexdigest()))

# Whether VERSION satisfies the relation IMAGE_TEMPLATE (a Debian relation, one package)
def image_template_satisfies(spec, version):
    from debian.deb822 import PkgRelation
    from debian.debian_support import Version
    wanted = PkgRelation.parse_relations(spec)[0][0].get("version")
    if not wanted:
        return True
    op, bound = wanted
    c = (Version(version) > Version(bound)) - (Version(version) < Version(bound))
    return {">=": c >= 0, "<=": c <= 0, "=": c == 0, ">>": c > 0, "<<": c < 0}[op]

# do_rootfs_install runs rootfs_prepare by name, first. It becomes image_template_prepare; Isar's
# own, whatever it is in the Isar version at hand, stays callable as
# image_template_isar_rootfs_prepare (for IMAGE_TEMPLATE_ON_STALE = "full"). Done once the
# recipe is parsed: whether the recipe inherits image before or after this class does not matter.
def image_template_take_rootfs_prepare(d):
    isar = "image_template_isar_rootfs_prepare"
    if d.getVarFlag("rootfs_prepare", "python") or d.getVar(isar, False) is not None:
        bb.fatal("image-template-consume: rootfs_prepare is not Isar's (shell) function")
    for name, source in ((isar, "rootfs_prepare"), ("rootfs_prepare", "image_template_prepare")):
        flags = d.getVarFlags(source) or {}
        d.setVar(name, d.getVar(source, False))
        for flag in set(d.getVarFlags(name) or {}) - set(flags):
            d.delVarFlag(name, flag)
        d.setVarFlags(name, flags)

# Isar's package installation runs apt-get four times (download from the mirror, download from
# isar-apt, install, and here the purge), each ~1.2-2 s of apt loading and resolving the whole
# bookworm cache for an image that adds a few packages to the template. From a template it is
# one apt-get run that downloads, installs and purges, followed by the export of what it
# downloaded to DL_DIR (isar-apt's packages are used where they are, and not exported, as in
# Isar; image_template_export_package_cache). The report of what the sources have newer runs beside it, and the locale steps are
# Isar's unless the template went through them with the same settings.
def image_template_install_commands(cmds):
    replaced = {
        "rootfs_install_pkgs_download": [],
        "rootfs_install_pkgs_isar_download": [],
        "rootfs_export_package_cache": [],
        "rootfs_import_package_cache": ["image_template_import_package_cache"],
        # after the install (image_template_install removes them before dpkg runs): apt
        # needs resolv.conf to download
        "rootfs_install_clean_files": [],
        "rootfs_install_pkgs_install": ["image_template_install", "image_template_export_package_cache",
                                        "rootfs_install_clean_files"],
        "rootfs_install_pkgs_update": ["rootfs_install_pkgs_update", "image_template_report_start"],
        "image_install_localepurge_download": ["image_template_localepurge_download"],
        "image_install_localepurge_install": ["image_template_locales"],
    }
    out = [new for cmd in cmds for new in replaced.get(cmd, [cmd])]
    if "image_template_install" not in out:
        bb.fatal("image-template-consume: no rootfs_install_pkgs_install in ROOTFS_INSTALL_COMMAND")
    return out + ["image_template_report_newer"]

# rootfs_prepare is called from a list in do_rootfs_install: name it, and what it reads.
do_rootfs_install[vardeps] += "rootfs_prepare image_template_stage image_template_isar_rootfs_prepare \
    IMAGE_TEMPLATE IMAGE_TEMPLATE_KEY IMAGE_TEMPLATE_SOURCE IMAGE_TEMPLATE_REMOVE IMAGE_TEMPLATE_ON_STALE \
    IMAGE_TEMPLATE_RESOLVED"
IMAGE_TEMPLATE_RESOLVED ??= ""

# PACKAGE VERSION DEB_SHA256 ROOTFS_SHA256 of the newest template in IMAGE_TEMPLATE_SOURCE
# that satisfies IMAGE_TEMPLATE (tmpl2deb resolve: apt reads the signed index), or
# "unresolved: WHY" (rootfs_prepare then stops with WHY). With BB_NO_NETWORK, and a source
# that is not a local file: URI, the last one resolved (IMAGE_TEMPLATE_RESOLVED_OFFLINE names
# the record; the signature stays what it was).
def image_template_resolve(d):
    source, spec = d.getVar("IMAGE_TEMPLATE_SOURCE"), d.getVar("IMAGE_TEMPLATE")
    line, record = image_template_resolve_source(d, source, [spec], image_template_offline(d))
    if record:
        # the same signature as when it was resolved; the log says how it was had
        d.setVar("IMAGE_TEMPLATE_RESOLVED_OFFLINE", record)
    return line
image_template_resolve[vardepsexclude] = "BB_NO_NETWORK"

# Whether the template must come without the network: BB_NO_NETWORK, and a source that is
# not a local file: URI. Then the template last resolved is built from, as staged before
# (tmpl2deb stage --offline: the lists and the .deb apt checked then).
def image_template_offline(d):
    uri = image_template_source_uri(d.getVar("IMAGE_TEMPLATE_SOURCE"))
    return bb.utils.to_boolean(d.getVar("BB_NO_NETWORK")) and not uri.startswith("file:")
image_template_offline[vardepsexclude] = "BB_NO_NETWORK"
do_rootfs_install[network] = "${TASK_USE_SUDO}"

python image_template_prepare() {
    import json, os, time
    started = time.monotonic()
    recipe = d.getVar("IMAGE_TEMPLATE_RECIPE")
    resolved = (d.getVar("IMAGE_TEMPLATE_RESOLVED") or "").split()
    if resolved[:1] == ["unresolved:"]:
        bb.fatal("IMAGE_TEMPLATE = \"%s\" from %s: %s" % (d.getVar("IMAGE_TEMPLATE"),
                 d.getVar("IMAGE_TEMPLATE_SOURCE"), " ".join(resolved[1:])))
    if resolved:
        # exactly the template the signature names
        d.setVar("IMAGE_TEMPLATE_STAGE_SPEC", "%s=%s" % (resolved[0], resolved[1]))
    # the signature a template made by IMAGE_TEMPLATE_RECIPE in this build must record
    expected = image_template_rootfs_hash(d, recipe)
    if recipe and not expected:
        bb.fatal("no task hash of %s:do_rootfs_install" % recipe)
    policy = d.getVar("IMAGE_TEMPLATE_ON_STALE")
    file = d.getVar("IMAGE_TEMPLATE_FILE")
    if file:
        image_template_check_files(d)
        parents = " ".join("--with-parent=" + p
                           for p in (d.getVar("IMAGE_TEMPLATE_FILE_PARENTS") or "").split())
        d.setVar("IMAGE_TEMPLATE_UNPACK_ARGS", "--arch %s --distro %s --suite %s %s %s" % (
            d.getVar("DISTRO_ARCH"), d.getVar("BASE_DISTRO"), d.getVar("BASE_DISTRO_CODENAME"),
            parents, file))
    else:
        if image_template_offline(d):
            d.setVar("IMAGE_TEMPLATE_STAGE_OFFLINE", "--offline")
        bb.build.exec_func("image_template_stage", d)
    staged = time.monotonic()
    # a delta template comes with its parents: the one named in IMAGE_TEMPLATE is the image's
    meta = json.loads(image_template_info(d, "--json"))
    if file and not image_template_satisfies(d.getVar("IMAGE_TEMPLATE"), meta["version"]):
        bb.fatal("%s in SRC_URI is %s %s, which does not satisfy IMAGE_TEMPLATE = \"%s\""
                 % (file, meta["package"], meta["version"], d.getVar("IMAGE_TEMPLATE")))
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
            names = [line.split()[0] for line in image_template_info(d, "--packages").splitlines()]
            d.appendVar("ROOTFS_PACKAGES", " " + " ".join(names))
            bb.build.exec_func("image_template_isar_rootfs_prepare", d)
            return
    if resolved and meta["rootfs_sha256"] != resolved[3]:
        bb.fatal("%s %s in %s is not the template this build resolved when it parsed (rootfs "
                 "sha256 %s, now %s): it was republished meanwhile; run bitbake again"
                 % (meta["package"], meta["version"], d.getVar("IMAGE_TEMPLATE_SOURCE"),
                    resolved[3], meta["rootfs_sha256"]))
    bb.plain("%s: building from template %s %s (rootfs sha256 %s%s)%s" % (
        d.getVar("PN"), meta["package"], meta["version"], meta["rootfs_sha256"],
        ", .deb sha256 " + resolved[2] if resolved else "",
        ", as last resolved, from %s (BB_NO_NETWORK)" % d.getVar("IMAGE_TEMPLATE_RESOLVED_OFFLINE")
        if d.getVar("IMAGE_TEMPLATE_RESOLVED_OFFLINE") else ""))
    with open(d.expand("${WORKDIR}/image-template-record"), "w") as f:
        f.write("Template-Package: %s\nTemplate-Version: %s\nTemplate-Rootfs-Sha256: %s\n"
                % (meta["package"], meta["version"], meta["rootfs_sha256"]))
        if resolved:
            f.write("Template-Deb-Sha256: %s\n" % resolved[2])
        f.write("Template-Source: %s\n" % (d.getVar("IMAGE_TEMPLATE_FILE_URL")
                                           or d.getVar("IMAGE_TEMPLATE_SOURCE")))
    checked = time.monotonic()
    bb.build.exec_func("image_template_unpack", d)
    bb.note("template staged in %.1f s, checked in %.1f s, unpacked in %.1f s"
            % (staged - started, checked - staged, time.monotonic() - checked))
}
# (the local paths of templates in SRC_URI are not their identity: SRC_URI is, through do_fetch)
image_template_prepare[vardepsexclude] += "BB_TASKDEPDATA IMAGE_TEMPLATE_RESOLVED_OFFLINE \
    IMAGE_TEMPLATE_FILE IMAGE_TEMPLATE_FILE_PARENTS"
image_template_info[vardepsexclude] = "IMAGE_TEMPLATE_FILE"

# tmpl2deb info OPTION of the template staged (the .deb apt downloaded): its output
def image_template_info(d, option):
    import subprocess
    where = ([d.getVar("IMAGE_TEMPLATE_FILE")] if d.getVar("IMAGE_TEMPLATE_FILE") else
             ["--package", d.getVar("IMAGE_TEMPLATE_PACKAGE"), d.getVar("IMAGE_TEMPLATE_STAGING")])
    argv = d.getVar("TMPL2DEB").split() + ["info", "-q", option] + where
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        bb.fatal("tmpl2deb info: %s" % result.stderr.strip())
    return result.stdout

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
    sudo rm -f "${WORKDIR}/image-template-record"
    mkdir -p "$(dirname "${IMAGE_TEMPLATE_STAGING}")"
    ${IMAGE_TEMPLATE_SUDO} ${TMPL2DEB} stage ${IMAGE_TEMPLATE_STAGE_OFFLINE} \
        --source "${IMAGE_TEMPLATE_SOURCE}" --arch "${DISTRO_ARCH}" \
        --distro "${BASE_DISTRO}" --suite "${BASE_DISTRO_CODENAME}" \
        "${IMAGE_TEMPLATE_STAGE_SPEC}" "${IMAGE_TEMPLATE_STAGING}"
}
IMAGE_TEMPLATE_STAGE_SPEC ?= "${IMAGE_TEMPLATE}"
IMAGE_TEMPLATE_STAGE_OFFLINE = ""
IMAGE_TEMPLATE_UNPACK_ARGS = "--package ${IMAGE_TEMPLATE_PACKAGE} ${IMAGE_TEMPLATE_STAGING}"
IMAGE_TEMPLATE_FILE ??= ""
IMAGE_TEMPLATE_BOOTSTRAP_APT = "${TMPDIR}/image-templates/bootstrap-apt/${ROOTFS_DISTRO}-${ROOTFS_ARCH}"

image_template_unpack[progress] = "custom:tmpl2deb_progress.Percent"
image_template_unpack() {
    # the build's own apt sources, preferences and package lists, as the bootstrap set them:
    # read from the bootstrap tarball (all of it, for three directories) beside the unpack,
    # once for each bootstrap tarball (kept in IMAGE_TEMPLATE_BOOTSTRAP_APT)
    key=$(stat -L -c %d-%i-%s-%Y "${BOOTSTRAP_SRC}")
    lists="${IMAGE_TEMPLATE_BOOTSTRAP_APT}/$key"
    bootstrap_tar=""
    if [ ! -d "$lists" ]; then
        # what a build that died while reading one left
        find "${IMAGE_TEMPLATE_BOOTSTRAP_APT}" -maxdepth 1 -name '.new-*' -mmin +60 \
            -exec sudo rm -rf {} + 2>/dev/null || true
        new="${IMAGE_TEMPLATE_BOOTSTRAP_APT}/.new-$key-$$"
        mkdir -p "$new"
        ( sudo tar -xf "${BOOTSTRAP_SRC}" -C "$new" --wildcards \
              './etc/apt/sources.list.d/*' './etc/apt/preferences.d/*' './var/lib/apt/lists/*' \
          && { sudo mv -T "$new" "$lists" 2>/dev/null || sudo rm -rf "$new"; } ) &
        bootstrap_tar=$!
    fi
    sudo ${TMPL2DEB} unpack ${IMAGE_TEMPLATE_UNPACK_ARGS} "${ROOTFSDIR}" \
        || { [ -z "$bootstrap_tar" ] || wait $bootstrap_tar || true; exit 1; }
    [ -z "$bootstrap_tar" ] || wait $bootstrap_tar
    # those of other bootstrap tarballs are of no more use
    for old in "${IMAGE_TEMPLATE_BOOTSTRAP_APT}"/*; do
        [ "$old" = "$lists" ] || sudo rm -rf "$old"
    done
    # as tar would have put them there (each directory with its own attributes, not its
    # parents'); the 100 MB of package lists as hard links (the same file system, nothing
    # copied: apt and Isar replace or remove list files, never write into them)
    for dir in etc/apt/sources.list.d etc/apt/preferences.d var/lib/apt/lists; do
        link=""
        [ "$dir" != var/lib/apt/lists ] || link=l
        if [ -d "$lists/$dir" ]; then
            sudo cp -a$link --remove-destination "$lists/$dir/." "${ROOTFSDIR}/$dir/"
        fi
    done
    # what the image was built from, for the device to tell
    sudo install -D -m 0644 "${WORKDIR}/image-template-record" \
        "${ROOTFSDIR}${IMAGE_TEMPLATE_RECORD}"
}

# The package lists are the bootstrap's (restored in rootfs_prepare), as in a plain build of
# the same image: Isar then refreshes only isar-apt. A full apt-get update here would let the
# image from the template see other versions than the plain build.

# What the build's apt sources have newer than the template (tmpl2deb outdated --rootfs: apt's
# own simulation in the rootfs, which writes nothing there): a template from another team may
# lag behind the mirror. It runs beside the installation; image_template_report_newer, the
# last step, waits for it and warns. The build goes on.
python image_template_report_start() {
    import subprocess, tempfile
    out = tempfile.TemporaryFile(mode="w+")
    argv = ["sudo"] + d.getVar("TMPL2DEB").split() + ["outdated", "-q", "--rootfs",
                                                       d.getVar("ROOTFSDIR")]
    d.image_template_report = (subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, text=True), out)
}

python image_template_report_newer() {
    started = getattr(d, "image_template_report", None)
    if started is None:
        return
    process, out = started
    d.image_template_report = None
    code = process.wait()
    out.seek(0)
    lines = out.read().splitlines()
    if code != 0:
        bb.warn("%s: could not tell what the apt sources have newer than the template: %s"
                % (d.getVar("IMAGE_TEMPLATE"), lines[-1] if lines else "exit status %d" % code))
    elif lines:
        bb.warn("%s: %d packages of the template have newer versions in the build's apt "
                "sources: %s" % (d.getVar("IMAGE_TEMPLATE"), len(lines), ", ".join(lines[:20])))
}

# Download, install and purge in one apt-get run: IMAGE_TEMPLATE_REMOVE as "PACKAGE-".
image_template_install[weight] = "8000"
image_template_install[progress] = "custom:rootfs_progress.PkgsInstallProgressHandler"
image_template_install[network] = "${TASK_USE_NETWORK_AND_SUDO}"
image_template_install() {
    remove=""
    for pkg in ${IMAGE_TEMPLATE_REMOVE}; do
        remove="$remove $pkg-"
    done
    if [ -n "$remove" ]; then
        remove="--purge --autoremove $remove"
    fi
    # Isar removes ROOTFS_CLEAN_FILES (resolv.conf, hostname) after downloading and before
    # installing; in one apt-get run that is its DPkg::Pre-Invoke (the downloads are done)
    clean=""
    for clean_file in ${ROOTFS_CLEAN_FILES}; do
        clean="$clean $clean_file"
    done
    sudo -E chroot '${ROOTFSDIR}' /usr/bin/apt-get ${ROOTFS_APT_ARGS} \
        -o "DPkg::Pre-Invoke::=rm -f$clean" ${ROOTFS_PACKAGES} $remove
}

# Isar's package cache in DL_DIR (deb_dl_dir_import and _export), the same, at the cost of the
# few packages an image adds to a template: Isar links every .deb of the cache into the rootfs
# with one ln each (hundreds, more with every package the builds ever downloaded), and the export
# walks them all again and chowns the whole cache (~1.7 s of an image from a template). Here one
# ln links them all, and the export takes what apt downloaded in this build: the files of the
# archives that are no link to the cache (isar-apt's packages apt uses where they are).
image_template_import_package_cache() {
    pc="${DEBDIR}/${ROOTFS_BASE_DISTRO}-${BASE_DISTRO_CODENAME}"
    archives="${ROOTFSDIR}/var/cache/apt/archives"
    sudo mkdir -p "$archives/partial"
    sudo touch "$archives/lock"
    sudo chown -R "$(id -u):$(id -g)" "$archives"
    [ -d "$pc" ] || return 0
    (
        flock 9
        find "$pc" -maxdepth 1 -type f -iname '*.deb' -print0 \
            | xargs -0 -r ln -Pf -t "$archives" 2>/dev/null \
            || find "$pc" -maxdepth 1 -type f -iname '*.deb' -exec cp -n --no-preserve=owner -t "$archives" {} +
    ) 9>"$pc.lock"
}

image_template_export_package_cache() {
    pc="${DEBDIR}/${ROOTFS_BASE_DISTRO}-${BASE_DISTRO_CODENAME}"
    mkdir -p "$pc"
    (
        flock 9
        sudo find "${ROOTFSDIR}/var/cache/apt/archives" -maxdepth 1 -type f -iname '*.deb' -links 1 \
            | while IFS= read -r deb; do
            [ -f "$pc/${deb##*/}" ] && continue
            sudo ln -Pf "$deb" "$pc/" 2>/dev/null || sudo cp -n "$deb" "$pc/"
            sudo chown "$(id -u):$(id -g)" "$pc/${deb##*/}"
        done
    ) 9>"$pc.lock"
}

# -- locales ------------------------------------------------------------------------------------
# Isar's image_install_localepurge_install generates the locales of LOCALE_GEN (dpkg-reconfigure
# locales) and purges all others with localepurge, which it installs and purges again: 11-16 s
# on 2 cores. A template made with the same LOCALE_GEN and LOCALE_DEFAULT (recorded in
# /var/lib/tmpl2deb/locales) already has its locales generated and purged: only the files of the
# packages installed on top are left to purge, by localepurge's own script, run once from the
# package Isar downloaded. Otherwise Isar's step runs as in a plain build.
def image_template_locales_reused(d):
    import os
    path = os.path.join(d.getVar("ROOTFSDIR"), "var/lib/tmpl2deb/locales")
    try:
        with open(path) as f:
            have = f.read()
    except OSError:
        return False
    return (have == image_template_locale_record(d)
            and os.path.exists(d.getVar("ROOTFSDIR") + d.getVar("IMAGE_TEMPLATE_LOCALEPURGE")))

# Isar's download of localepurge, unless the template carries its script
python image_template_localepurge_download() {
    if image_template_locales_reused(d):
        bb.note("localepurge: the template's script (%s)" % d.getVar("IMAGE_TEMPLATE_LOCALEPURGE"))
        return
    bb.build.exec_func("image_install_localepurge_download", d)
}

python image_template_locales() {
    if image_template_locales_reused(d):
        bb.plain("%s: locales as the template made them (LOCALE_GEN, LOCALE_DEFAULT "
                 "unchanged): purging what the new packages added" % d.getVar("PN"))
        bb.build.exec_func("image_template_localepurge", d)
        return
    bb.note("the template's locales were made with other settings: Isar's locale step runs")
    bb.build.exec_func("image_template_locales_reset", d)
    bb.build.exec_func("image_install_localepurge_install", d)
}
do_rootfs_install[vardeps] += "image_template_locales image_install_localepurge_install"

# image_install_localepurge_install is not idempotent: it appends to locale.gen (restored
# from the bootstrap) and links /etc/locale.conf (made again by it).
image_template_locales_reset() {
    sudo tar -xf "${BOOTSTRAP_SRC}" -C "${ROOTFSDIR}" ./etc/locale.gen
    sudo rm -f "${ROOTFSDIR}/etc/locale.conf"
}

image_template_localepurge() {
    cat > "${WORKDIR}/locale.nopurge" <<'__EOF__'
#USE_DPKG
MANDELETE
DONTBOTHERNEWLOCALE
#SHOWFREEDSPACE
#QUICKNDIRTYCALC
#VERBOSE
${@get_nopurge(d)}
__EOF__
    sudo -E -s <<EOSUDO
        set -e
        cp "${ROOTFSDIR}${IMAGE_TEMPLATE_LOCALEPURGE}" "${ROOTFSDIR}/tmp/tmpl2deb-localepurge"
        cp "${WORKDIR}/locale.nopurge" "${ROOTFSDIR}/etc/locale.nopurge"
        chroot "${ROOTFSDIR}" /bin/bash /tmp/tmpl2deb-localepurge
        # what purging the package removes again
        rm -rf "${ROOTFSDIR}/tmp/tmpl2deb-localepurge" "${ROOTFSDIR}/etc/locale.nopurge" \
            "${ROOTFSDIR}/var/cache/localepurge"
EOSUDO
}
