#!/usr/bin/python3
"""Benchmark tmpl2deb pack/unpack/publish/stage side by side with reference pipelines (root).

Usage: bench/bench.py [ROOTFS] [--runs N] [--work DIR]
Without ROOTFS, a Debian minbase rootfs is built with mmdebstrap first. Each row is the
median of N runs, the rows taking turns in each of N rounds: wall time, CPU time (user+sys
of the whole process tree), peak RSS (of the whole process tree, sampled from /proc every
10 ms and summed over live processes; files written to a tmpfs such as /dev/shm are not
counted: they are the output, on every row) and output size. Pack is compared with
`tar | zstd`, unpack and stage+unpack with `zstd -dc | tar -x`; the `tee sha256` rows show
what hashing the whole tar costs (format 1 did; format 2 hashes the compressed payload).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TAR_FLAGS = (
    "--format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "
    "--xattrs --xattrs-include='*' --acls --selinux --numeric-owner"
)
TMPL2DEB = [sys.executable, "-m", "tmpl2deb"]


def tree_rss(pid: int) -> int:
    """Sum of VmRSS (KiB) of pid and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(
                int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS")
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def measure(argv: list[str] | str, output: Path) -> tuple[float, float, int, int]:
    """(wall s, cpu s, peak RSS KiB of the process tree, output bytes) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    process = subprocess.Popen(argv, shell=isinstance(argv, str), stdout=subprocess.DEVNULL)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = process.wait()
    done.set()
    sampler.join()
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code:
        raise SystemExit(f"benchmark command failed ({code}): {argv}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, peak, _size(output)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True,
                                  check=True).stdout.split()[0])  # fmt: skip
    return 0


@dataclass(frozen=True)
class Row:
    """One command to measure: its output, and what to remove before each run."""

    name: str
    kind: str  # pack, unpack, publish or stage: the reference it is compared with
    argv: list[str] | str
    output: Path
    reset: tuple[Path, ...] = ()


def interleaved(runs: int, rows: list[Row]) -> dict[str, list[float]]:
    """Median of RUNS measurements of every row, the rows taking turns in each round (so that
    a noisy moment of the machine spreads over all of them)."""
    results: dict[str, list[tuple[float, float, int, int]]] = {row.name: [] for row in rows}
    for _ in range(runs):
        for row in rows:
            for path in row.reset:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
            subprocess.run(["sync"], check=True)
            results[row.name].append(measure(row.argv, row.output))
    return {
        name: [statistics.median(column) for column in zip(*values, strict=True)]
        for name, values in results.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", nargs="?", type=Path, help="rootfs directory (default: minbase)")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default: 3)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: tmp)")
    args = parser.parse_args()
    # byte-compiled, as the Debian package installs it (with PYTHONDONTWRITEBYTECODE set, every
    # run would compile the modules again: 0.05 s of each step)
    package = Path(__file__).resolve().parents[1] / "tmpl2deb"
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)
    work = Path(tempfile.mkdtemp(prefix="tmpl2deb-bench-", dir=args.work))
    try:
        return run(args, work)
    finally:
        subprocess.run(["umount", "-q", work / "merged"], check=False)
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    rootfs = args.rootfs
    if rootfs is None:
        rootfs = work / "minbase"
        print("building a minbase rootfs with mmdebstrap ...", file=sys.stderr)
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "bookworm",
                        rootfs], check=True)  # fmt: skip
    out = work / "out"
    out.mkdir()
    tool = " ".join(TMPL2DEB)
    pack = f"SOURCE_DATE_EPOCH=1700000000 {tool} pack -q {rootfs} --name bench --version 1 -o {out}"
    subprocess.run(pack, shell=True, check=True)  # the .deb the other rows read
    deb = out / "tmpl-bench_1_amd64.deb"
    ref_tar = work / "ref.tar.zst"
    make_tar = f"tar -C {rootfs} -cf - {TAR_FLAGS} --sort=name ."
    compress = f"zstd -q -T0 -3 > {ref_tar}"
    subprocess.run(f"{make_tar} | {compress}", shell=True, check=True, executable="/bin/bash")
    dest, ref_dest, staging = work / "dest", work / "ref-dest", work / "staging"
    decompress = f"mkdir {ref_dest} && zstd -dc {ref_tar}"
    extract = f"tar -C {ref_dest} -x {TAR_FLAGS}"
    repo, ref_repo, served = work / "repo", work / "ref-repo", work / "served"
    subprocess.run([*TMPL2DEB, "publish", "-q", "--repo", served, deb], check=True)
    with _naive_tree(rootfs, work) as merged, _http(served) as url:
        source = f"deb [trusted=yes] {url} bookworm main"
        rows = [
            Row("tmpl2deb pack", "pack", pack, deb, (deb,)),
            Row("tar | zstd -T0 -3", "pack", f"{make_tar} | {compress}", ref_tar),
            Row("tar | tee sha256 | zstd", "pack", hashed(make_tar, compress), ref_tar),
            Row("dpkg-deb -b (naive)", "pack", ["dpkg-deb", "--nocheck", "-Zzstd", "-z3", "-b",
                os.fspath(merged), os.fspath(work / "naive.deb")], work / "naive.deb"),
            Row("tmpl2deb unpack", "unpack", [*TMPL2DEB, "unpack", "-q", os.fspath(deb),
                os.fspath(dest)], dest, (dest,)),
            Row("zstd -dc | tar -x", "unpack", f"{decompress} | {extract}", ref_dest,
                (ref_dest,)),
            Row("zstd -dc | tee sha256 | tar", "unpack", hashed(decompress, extract), ref_dest,
                (ref_dest,)),
            Row("tmpl2deb publish", "publish", [*TMPL2DEB, "publish", "-q", "--repo",
                os.fspath(repo), os.fspath(deb)], repo, (repo,)),
            Row("reprepro includedeb", "publish", f"mkdir -p {ref_repo}/conf && printf "
                "'Codename: bookworm\\nArchitectures: amd64\\nComponents: main\\n' > "
                f"{ref_repo}/conf/distributions && reprepro -s -b {ref_repo} includedeb "
                f"bookworm {deb}", ref_repo, (ref_repo,)),
            Row("stage+unpack (HTTP)", "stage", f"{tool} stage -q --source '{source}' "
                f"tmpl-bench {staging} && {tool} unpack -q {staging} {dest}", dest,
                (staging, dest)),
        ]  # fmt: skip
        medians = interleaved(args.runs, rows)
    report(args.runs, rootfs, rows, medians)
    return 0


def report(runs: int, rootfs: Path, rows: list[Row], medians: dict[str, list[float]]) -> None:
    refs = {"pack": "tar | zstd -T0 -3", "unpack": "zstd -dc | tar -x",
            "publish": "reprepro includedeb", "stage": "zstd -dc | tar -x"}  # fmt: skip
    rootfs_tar = _size_of_tar(rootfs)
    print(f"rootfs: {rootfs}  ({rootfs_tar / 2**20:.1f} MiB as tar), median of {runs} "
          "interleaved runs")  # fmt: skip
    print(
        f"{'step':<28}{'wall s':>8}{'cpu s':>8}{'peak RSS MiB':>14}{'output MiB':>12}{'ratio':>8}"
    )
    for row in rows:
        wall, cpu, rss, size = medians[row.name]
        base = medians[refs[row.kind]][0]
        print(f"{row.name:<28}{wall:>8.2f}{cpu:>8.2f}{rss / 1024:>14.1f}{size / 2**20:>12.1f}"
              f"{wall / base:>7.2f}x")  # fmt: skip
    payload = medians["tmpl2deb pack"][3] / rootfs_tar
    print(f"payload / rootfs tar: {payload:.3f}")


def hashed(upstream: str, downstream: str) -> list[str]:
    """`upstream | downstream` with the sha256 a template records of the stream in between,
    by the OpenSSL that Python's hashlib uses (coreutils' sha256sum is 3x slower here)."""
    tee = "tee >(openssl dgst -sha256 >/dev/null)"
    return ["bash", "-c", f"{upstream} | {tee} | {downstream}; wait $!"]


@contextlib.contextmanager
def _http(directory: Path) -> Iterator[str]:
    """python3 -m http.server on loopback serving DIRECTORY; its URL."""
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                               "0"], cwd=directory, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        yield "http://127.0.0.1:" + server.stdout.readline().split(" port ")[1].split()[0]
    finally:
        server.kill()
        server.wait()


def _size_of_tar(rootfs: Path) -> int:
    tar = subprocess.Popen(["tar", "-C", rootfs, "-cf", "-", "--format=pax", "."],
                           stdout=subprocess.PIPE)  # fmt: skip
    assert tar.stdout is not None
    total = 0
    while chunk := tar.stdout.read(1 << 20):
        total += len(chunk)
    tar.wait()
    return total


@contextlib.contextmanager
def _naive_tree(rootfs: Path, work: Path) -> Iterator[Path]:
    """dpkg-deb -b needs DEBIAN/control in the tree: add it with an overlay, not in ROOTFS."""
    upper, scratch, merged = work / "upper", work / "scratch", work / "merged"
    for path in (upper / "DEBIAN", scratch, merged):
        path.mkdir(parents=True)
    (upper / "DEBIAN/control").write_text(
        "Package: naive\nVersion: 1\nArchitecture: amd64\nMaintainer: b <b@example.org>\n"
        "Description: naive rootfs package\n"
    )
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={rootfs},upperdir={upper},workdir={scratch}", merged],
                   check=True)  # fmt: skip
    try:
        yield merged
    finally:
        subprocess.run(["umount", merged], check=True)


if __name__ == "__main__":
    sys.exit(main())
