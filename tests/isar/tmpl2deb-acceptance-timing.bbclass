# SPDX-License-Identifier: MIT
# tests/isar/run only (not part of the layer): a timestamp between the steps of
# do_rootfs_install of every image, in ${WORKDIR}/tmpl2deb-timing. Line 1: the time the task
# body starts (rootfs_prepare comes first) and the list of ROOTFS_INSTALL_COMMAND; then one
# time before each command and one after the last. Isar's buildstats time whole tasks only.

python __anonymous() {
    if bb.data.inherits_class("image", d):
        d.appendVarFlag("do_rootfs_install", "prefuncs", " tmpl2deb_timing")
}

# a prefunc shares the task's datastore: the task body runs the list with the marks in it
python tmpl2deb_timing() {
    import time
    cmds = (d.getVar("ROOTFS_INSTALL_COMMAND") or "").split()
    d.setVar("ROOTFS_INSTALL_COMMAND",
             " ".join("tmpl2deb_timing_mark " + cmd for cmd in cmds) + " tmpl2deb_timing_mark")
    with open(d.expand("${WORKDIR}/tmpl2deb-timing"), "w") as f:
        f.write("%.3f %s\n" % (time.time(), " ".join(cmds)))
}

python tmpl2deb_timing_mark() {
    import time
    with open(d.expand("${WORKDIR}/tmpl2deb-timing"), "a") as f:
        f.write("%.3f\n" % time.time())
}
