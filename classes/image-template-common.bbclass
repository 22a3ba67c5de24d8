# Shared by image-template-produce and image-template-consume (tmpl2deb layer).
#
# tmpl2deb runs on the build host, from this layer's own checkout, with Debian's python3:
# Isar's rootfs tasks already work on ${IMAGE_ROOTFS} from the host with sudo, and a template
# is made of (and unpacked into) exactly that tree. Running the layer's copy means a user who
# only adds this layer gets the tmpl2deb that matches its classes. Host packages it needs:
# python3-debian python3-apt python3-arpy zstd reprepro gpg (or install the tmpl2deb package
# and set TMPL2DEB = "tmpl2deb").

TMPL2DEB ?= "env PYTHONPATH=${LAYERDIR_tmpl2deb} /usr/bin/python3 -m tmpl2deb"
TMPL2DEB[vardepvalue] = "tmpl2deb"

# The template repository of this build (reprepro, base-apt layout), one per DISTRO.
IMAGE_TEMPLATE_REPO ?= "${DEPLOY_DIR}/image-templates/${DISTRO}"
IMAGE_TEMPLATE_CODENAME ?= "${BASE_DISTRO_CODENAME}"
# gpg key id to sign the repository with (GNUPGHOME of the build user); empty: unsigned.
IMAGE_TEMPLATE_SIGN_KEY ?= ""
IMAGE_TEMPLATE_REPO_LOCK = "${DEPLOY_DIR}/image-templates/${DISTRO}.lock"

def image_template_rootfs_hash(d, pn):
    """The task hash of PN's do_rootfs_install as the running task sees it (empty while
    parsing, or when the task does not depend on it): a template's build signature."""
    for entry in (d.getVar("BB_TASKDEPDATA", False) or {}).values():
        if pn and entry[0] == pn and entry[1] == "do_rootfs_install":
            return entry[6]
    return ""
image_template_rootfs_hash[vardepsexclude] = "BB_TASKDEPDATA"
