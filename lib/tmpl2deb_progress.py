# SPDX-License-Identifier: MIT
# tmpl2deb layer: progress of the template steps for bitbake, as Isar's rootfs_progress does
# for its package steps. tmpl2deb prints "... NN % of M MiB ..." every few seconds when its
# stderr is not a terminal (a task log).

import re

import bb.progress

_PERCENT = re.compile(r": ([0-9]+) % of ")


class Percent(bb.progress.ProgressHandler):
    """Task (or, inside do_rootfs_install, stage) progress from tmpl2deb's progress lines."""

    def __init__(self, d, outfile, otherargs=None):
        super().__init__(d, outfile)
        # inside do_rootfs_install: Isar's reporter, so that the step is a stage of the task
        self._stage = getattr(d, "rootfs_progress", None)
        self._buffer = ""
        self._set(0)

    def _set(self, percent):
        if self._stage is not None:
            self._stage.update(percent)
        else:
            self.update(percent)

    def write(self, string):
        self._buffer += string
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            found = _PERCENT.search(line)
            if found:
                self._set(min(int(found.group(1)), 99))
        super().write(string)
