# SPDX-License-Identifier: MIT
# What every class of the tmpl2deb layer runs with: tmpl2deb itself, the host check, and
# reading an apt source of the platform's (its key fetched, what it holds resolved at parse
# time, as last resolved without network).
#
# tmpl2deb runs on the build host, from this layer's own checkout, with Debian's python3:
# Isar's rootfs tasks already work on ${IMAGE_ROOTFS} from the host with sudo, and a template
# is made of (and unpacked into) exactly that tree. Running the layer's copy means a user who
# only adds this layer gets the tmpl2deb that matches its classes. Host packages it needs:
# python3-debian python3-arpy zstd gpg (or install the tmpl2deb package
# and set TMPL2DEB = "tmpl2deb").

TMPL2DEB ?= "env PYTHONPATH=${LAYERDIR_tmpl2deb} /usr/bin/python3 -m tmpl2deb"

# bitbake's progress of the template steps (lib/tmpl2deb_progress.py; Isar puts the lib/ of
# every layer on sys.path, and registers its own handlers the same way)
python () {
    bb.utils._context["tmpl2deb_progress"] = __import__("tmpl2deb_progress")
    image_template_check_host(d)
}

# What the classes run on the build host, checked when bitbake parses the recipe: one error
# naming the Debian packages to install, instead of a traceback in the middle of a task.
# tmpl2deb.requirements imports only the standard library; it also checks tmpl2deb's Python
# modules. Asked once per bitbake parser process.
IMAGE_TEMPLATE_HOST_TOOLS = "sudo tar zstd dpkg-deb apt-get gpgv"
IMAGE_TEMPLATE_REQUIREMENTS ?= "env PYTHONPATH=${LAYERDIR_tmpl2deb} /usr/bin/python3 -m tmpl2deb.requirements"
def image_template_check_host(d):
    import subprocess
    argv = (d.getVar("IMAGE_TEMPLATE_REQUIREMENTS").split()
            + sorted(set(d.getVar("IMAGE_TEMPLATE_HOST_TOOLS").split())))
    checked = bb.utils._context.setdefault("tmpl2deb_host_checked", {})
    key = " ".join(argv)
    if key not in checked:
        try:
            result = subprocess.run(argv, capture_output=True, text=True)
        except OSError as err:
            checked[key] = "python3 (%s)" % err
        else:
            checked[key] = (result.stdout.strip() if result.returncode == 1
                            else "" if result.returncode == 0
                            else "(%s failed: %s)" % (key, result.stderr.strip()))
    if checked[key]:
        bb.fatal("%s: the build host lacks what the tmpl2deb classes run; install: apt-get "
                 "install %s" % (d.getVar("PN"), checked[key]))
image_template_check_host[vardepsexclude] = "IMAGE_TEMPLATE_REQUIREMENTS IMAGE_TEMPLATE_HOST_TOOLS"
TMPL2DEB[vardepvalue] = "tmpl2deb"
# sudo for the steps that reach the network (stage): Isar exports the build's proxy settings
# (isar_export_proxies), which plain sudo would drop before apt sees them.
IMAGE_TEMPLATE_SUDO = "sudo --preserve-env=http_proxy,https_proxy,ftp_proxy,no_proxy,HTTP_PROXY,HTTPS_PROXY,FTP_PROXY,NO_PROXY"
IMAGE_TEMPLATE_SUDO[vardepvalue] = "sudo"

IMAGE_TEMPLATE_KEY ??= ""
IMAGE_TEMPLATE_KEYRING ??= ""
# IMAGE_TEMPLATE_KEY, fetched when the recipe is parsed (the template is resolved then, from
# the index the key signs), once: the fetcher keeps it in DL_DIR with its checksum, so
# BB_NO_NETWORK builds find it there. IMAGE_TEMPLATE_KEYRING is its path, as ${DL_DIR}/...
# (a task signature holds no path of the build host; IMAGE_TEMPLATE_KEY is in it).
def image_template_fetch_key(d):
    import os
    key = d.getVar("IMAGE_TEMPLATE_KEY")
    if not key:
        return
    try:
        fetcher = bb.fetch2.Fetch([key], d)
        fetcher.download()
        path = fetcher.localpath(key)
    except bb.fetch2.BBFetchException as err:
        bb.fatal("%s: IMAGE_TEMPLATE_KEY %s: %s" % (d.getVar("PN"), key, err))
    dl_dir = d.getVar("DL_DIR")
    if path.startswith(dl_dir + "/"):
        path = "${DL_DIR}/" + os.path.relpath(path, dl_dir)
    d.setVar("IMAGE_TEMPLATE_KEYRING", path)

# The URI of an apt source (one-line or deb822), or ""
def image_template_source_uri(source):
    import re
    found = (re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", source or "")
             or re.search(r"^URIs:\s*(\S+)", source or "", re.MULTILINE | re.IGNORECASE))
    return found.group(1) if found else ""

# the last package versions each apt source + spec resolved to (for BB_NO_NETWORK)
IMAGE_TEMPLATE_RESOLVED_DIR ?= "${DL_DIR}/image-templates/resolved"

# tmpl2deb resolve ARGS (the template or packages SPECS) in SOURCE (apt reads its signed
# index, through the build's proxies): (what it printed, "") or ("unresolved: WHY", ""). When
# OFFLINE, the last one resolved: (that, the record's path). The record is keyed by source,
# arguments and DISTRO_ARCH.
def image_template_resolve_source(d, source, args, offline):
    import hashlib, os, subprocess
    arch = d.getVar("DISTRO_ARCH")
    key = hashlib.sha256("\n".join([source] + args + [arch]).encode()).hexdigest()[:24]
    record = os.path.join(d.getVar("IMAGE_TEMPLATE_RESOLVED_DIR"), key)
    what = " ".join(a for a in args if not a.startswith("--"))
    if not image_template_source_uri(source):
        return ("unresolved: %r is not an apt source (a 'deb ...' line or a deb822 stanza)"
                % source, "")
    if offline:
        try:
            with open(record) as f:
                return f.read().strip(), record
        except OSError:
            return ("unresolved: BB_NO_NETWORK is set and %s was never resolved from %s "
                    "with network" % (what, source), "")
    env = dict(os.environ)
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if d.getVar(name):
            env[name] = d.getVar(name)
    argv = d.getVar("TMPL2DEB").split() + ["resolve", "-q", "--source", source, "--arch", arch]
    result = subprocess.run(argv + args, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["exit status %d" % result.returncode]
        return "unresolved: " + lines[-1].replace("tmpl2deb: error: ", ""), ""
    out = result.stdout.strip()
    bb.utils.mkdirhier(os.path.dirname(record))
    with open(record + ".new", "w") as f:
        f.write(out + "\n")
    os.replace(record + ".new", record)
    return out, ""
