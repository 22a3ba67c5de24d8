#!/usr/bin/python3
"""Benchmark delta templates against full ones, side by side with zstd --patch-from (root).

Usage: bench/delta.py [PARENT CHILD] [--runs N] [--work DIR]
PARENT and CHILD are rootfs directories, CHILD a derivative of PARENT (say, PARENT plus one
package). Without them, a Debian minbase rootfs is built with mmdebstrap and the child is
derived from it with `tmpl2deb derive --install hello` (network needed). Rows as in
bench/bench.py: median wall time, CPU time, peak memory of the process tree, output size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.fspath(Path(__file__).parent))
from bench import TAR_FLAGS, TMPL2DEB, measure, median_run

EPOCH = "SOURCE_DATE_EPOCH=1700000000"
TOOL = f"{EPOCH} {' '.join(TMPL2DEB)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, metavar="PARENT CHILD")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default: 3)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: tmp)")
    args = parser.parse_args()
    if len(args.trees) not in (0, 2):
        parser.error("give both PARENT and CHILD, or neither")
    work = Path(tempfile.mkdtemp(prefix="tmpl2deb-bench-delta-", dir=args.work))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)


def run(args: argparse.Namespace, work: Path) -> int:
    if args.trees:
        parent, child = args.trees
    else:
        parent, child = work / "parent", work / "child"
        print("building a minbase rootfs with mmdebstrap, and it + hello ...", file=sys.stderr)
        sh(f"mmdebstrap --quiet --variant=minbase --mode=root bookworm {parent}")
        sh(f"{TOOL} pack -q {parent} --name minbase -o {work}")
        sh(f"{TOOL} derive -q {work}/tmpl-minbase_*.deb {child} --install hello "
           "--source 'deb http://deb.debian.org/debian bookworm main'")  # fmt: skip
    full_out, delta_out = work / "full", work / "delta"
    full_out.mkdir()
    delta_out.mkdir()
    sh(f"{TOOL} pack -q {parent} --name parent --version 1 -o {delta_out}")
    parent_deb = delta_out / "tmpl-parent_1_amd64.deb"
    parent_tar, child_tar = work / "parent.tar", work / "child.tar"
    for tree, tar in ((parent, parent_tar), (child, child_tar)):
        sh(f"tar -C {tree} -cf {tar} {TAR_FLAGS} --sort=name .")
    full_deb = full_out / "tmpl-child_1_amd64.deb"
    delta_deb = delta_out / "tmpl-child_1_amd64.deb"
    patch = work / "ref.zstpatch"
    dest, ref_dest = work / "dest", work / "ref-dest"
    rows = [
        ("pack full", median_run(args.runs, f"{TOOL} pack -q {child} --name child --version 1 "
                                 f"-o {full_out}", full_deb, [])),
        ("pack --delta-from", median_run(args.runs, f"{TOOL} pack -q {child} --name child "
                                         f"--version 1 -o {delta_out} --delta-from {parent_deb}",
                                         delta_deb, [])),
        ("zstd --patch-from", median_run(args.runs, f"zstd -q -T0 -3 --patch-from={parent_tar} "
                                         f"{child_tar} -o {patch} -f", patch, [])),
    ]  # fmt: skip
    rows += interleaved(args.runs, [
        ("unpack full", f"{TOOL} unpack -q {full_deb} {dest}", dest),
        ("unpack delta", f"{TOOL} unpack -q {delta_deb} {dest}", dest),
        ("zstd -d --patch-from|tar", f"mkdir {ref_dest} && zstd -dc --long=31 "
         f"--patch-from={parent_tar} {patch} | tar -C {ref_dest} -x {TAR_FLAGS}", ref_dest),
    ])  # fmt: skip
    payload = {deb: _payload(deb) for deb in (full_deb, delta_deb)}
    print(f"parent tar {parent_tar.stat().st_size / 2**20:.1f} MiB, child tar "
          f"{child_tar.stat().st_size / 2**20:.1f} MiB, median of {args.runs} runs")  # fmt: skip
    print(f"{'step':<26}{'wall s':>8}{'cpu s':>8}{'peak mem MiB':>14}{'output MiB':>12}")
    for name, (wall, cpu, rss, size) in rows:
        print(f"{name:<26}{wall:>8.2f}{cpu:>8.2f}{rss / 1024:>14.1f}{size / 2**20:>12.2f}")
    print(f"payload: full {payload[full_deb] / 2**20:.2f} MiB, delta "
          f"{payload[delta_deb] / 2**20:.2f} MiB = {payload[delta_deb] / payload[full_deb]:.1%} "
          "(target <= 5 %)")  # fmt: skip
    print(f"unpack delta / unpack full: {rows[4][1][0] / rows[3][1][0]:.2f}x (target <= 1.3x)")
    return 0


def interleaved(runs: int, rows: list[tuple[str, str, Path]]) -> list[tuple[str, list[float]]]:
    """Median of RUNS runs of each row, taking the rows in turn (a disk that slows down over
    time then weighs on every row alike); each output is removed before its run."""
    results: list[list[tuple[float, float, int, int]]] = [[] for _ in rows]
    for _ in range(runs):
        for n, (_name, command, output) in enumerate(rows):
            shutil.rmtree(output, ignore_errors=True)
            subprocess.run(["sync"], check=True)
            results[n].append(measure(command, output))
    return [
        (name, [statistics.median(column) for column in zip(*result, strict=True)])
        for (name, _command, _output), result in zip(rows, results, strict=True)
    ]


def _payload(deb: Path) -> int:
    """The size of the payload member (rootfs.tar.zst or rootfs.tardelta.zst)."""
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    line = next(ln for ln in listing.splitlines() if "/rootfs.tar" in ln)
    return int(line.split()[2])


if __name__ == "__main__":
    sys.exit(main())
