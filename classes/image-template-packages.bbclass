# SPDX-License-Identifier: MIT
# The platform's own packages in an application team's build (tmpl2deb layer).
#
# A platform build that makes templates (image-template-produce) publishes the packages it
# made, what it put in isar-apt, next to them: the component "packages" of its template
# repository, signed with it, every version kept. A recipe of the application team's brings
# those it needs into its own isar-apt, as Isar's dpkg-prebuilt does with .debs in SRC_URI:
# its images install them (IMAGE_INSTALL), and its own packages Build-Depend on them, built in
# sbuild against the platform's -dev packages (DEPENDS names them, as for packages built here).
#
#   inherit image-template-packages
#   IMAGE_TEMPLATE_PACKAGES = "libfoo-dev foo-tools"     (or "libfoo-dev (>= 1.2), foo-tools")
#   IMAGE_TEMPLATE_PACKAGES_SOURCE = "deb [signed-by=${IMAGE_TEMPLATE_KEYRING}] https://platform.example.org bookworm packages"
#   IMAGE_TEMPLATE_KEY = "https://platform.example.org/archive-keyring.gpg;sha256sum=..."
#
# The recipe PROVIDES the packages it names, and those of the source they depend on (a -dev
# package needs its library). When bitbake parses it, each resolves to the newest version in
# the source that satisfies it, read from the signed index by apt (tmpl2deb
# resolve --packages; what cannot be resolved stops do_fetch with the reason). The .debs go
# into SRC_URI with the sha256sum the index gives: bitbake fetches them into DL_DIR and checks
# them (for file:// this class does), and a new release of the platform's packages rebuilds
# what uses them. With BB_NO_NETWORK (and a source that is not a local file:), the last
# resolution is used: the .debs are in DL_DIR already. Without IMAGE_TEMPLATE_PACKAGES_SOURCE
# the recipe is skipped (a build directory with the platform's recipes has them from there).

inherit dpkg-prebuilt
inherit image-template-base

IMAGE_TEMPLATE_PACKAGES ??= ""
IMAGE_TEMPLATE_PACKAGES_SOURCE ??= ""
IMAGE_TEMPLATE_PACKAGES_ERROR ??= ""

python __anonymous() {
    pn = d.getVar("PN")
    specs = image_template_package_specs(d.getVar("IMAGE_TEMPLATE_PACKAGES"))
    if not specs:
        bb.fatal("%s inherits image-template-packages but IMAGE_TEMPLATE_PACKAGES is empty" % pn)
    if not (d.getVar("IMAGE_TEMPLATE_PACKAGES_SOURCE") or "").strip():
        raise bb.parse.SkipRecipe("IMAGE_TEMPLATE_PACKAGES_SOURCE is not set (the apt source "
                                  "of the platform's packages)")
    names = [spec.split("(")[0].split("=")[0].strip() for spec in specs]
    d.appendVar("PROVIDES", " " + " ".join(names))
    # the source may name the key as ${IMAGE_TEMPLATE_KEYRING}: fetched first
    image_template_fetch_key(d)
    source = d.getVar("IMAGE_TEMPLATE_PACKAGES_SOURCE").strip()
    # which versions the source holds now is part of the signature (SRC_URI), resolved at
    # every parse as for a template from a repository
    d.setVar("BB_DONT_CACHE", "1")
    uri = image_template_source_uri(source)
    offline = bb.utils.to_boolean(d.getVar("BB_NO_NETWORK")) and not uri.startswith("file:")
    out, record = image_template_resolve_source(d, source, ["--packages"] + specs, offline)
    if out.startswith("unresolved: "):
        # an error of the first task (do_fetch): the recipe is parsed for every multiconfig,
        # also those that never build it
        d.setVar("IMAGE_TEMPLATE_PACKAGES_ERROR", "IMAGE_TEMPLATE_PACKAGES = \"%s\" from %s: %s"
                 % (d.getVar("IMAGE_TEMPLATE_PACKAGES"), source, out[len("unresolved: "):]))
        return
    urls, local = [], []
    for line in out.splitlines():
        package, version, arch, sha256, url = line.split()
        # the packages of the source that those named depend on come along
        if package not in names:
            d.appendVar("PROVIDES", " " + package)
        if url.startswith("file:"):
            url = "file://" + "/" + url[len("file:"):].lstrip("/")
            local.append("%s=%s" % (url[len("file://"):], sha256))
        urls.append("%s;sha256sum=%s;unpack=false" % (url, sha256))
    d.appendVar("SRC_URI", " " + " ".join(urls))
    d.setVar("IMAGE_TEMPLATE_PACKAGES_LOCAL", " ".join(local))
    d.setVar("IMAGE_TEMPLATE_PACKAGES_RESOLVED", out)
    d.setVar("IMAGE_TEMPLATE_PACKAGES_RECORD", record)
}

# "a b" or "a (>= 1), b": the relations of IMAGE_TEMPLATE_PACKAGES
def image_template_package_specs(value):
    value = (value or "").strip()
    if "," in value or "(" in value:
        return [s.strip() for s in value.split(",") if s.strip()]
    return value.split()

python do_fetch:prepend() {
    if d.getVar("IMAGE_TEMPLATE_PACKAGES_ERROR"):
        bb.fatal(d.getVar("IMAGE_TEMPLATE_PACKAGES_ERROR"))
}
# (the reason differs from parse to parse: apt's throw-away root has a new name each time)
do_fetch[vardepsexclude] += "IMAGE_TEMPLATE_PACKAGES_ERROR"

# bitbake checks the sha256sum of what it downloads, not of a file:// it copies
python do_unpack:append() {
    import hashlib
    for item in (d.getVar("IMAGE_TEMPLATE_PACKAGES_LOCAL") or "").split():
        path, sha256 = item.rsplit("=", 1)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            bb.fatal("%s: sha256sum mismatch: %s is not the file the signed index names "
                     "(%s)" % (d.getVar("PN"), path, sha256))
    record = d.getVar("IMAGE_TEMPLATE_PACKAGES_RECORD")
    for line in (d.getVar("IMAGE_TEMPLATE_PACKAGES_RESOLVED") or "").splitlines():
        bb.plain("%s: platform package %s %s (%s)%s" % (d.getVar("PN"), *line.split()[:3],
                 ", as last resolved (BB_NO_NETWORK)" if record else ""))
}
do_unpack[vardepsexclude] += "IMAGE_TEMPLATE_PACKAGES_RECORD"
