#!/usr/bin/python3
"""Benchmark tmpl2deb pack/unpack/publish/stage side by side with reference pipelines (root).

Usage: bench/bench.py [ROOTFS] [--runs N] [--work DIR]
Without ROOTFS, a Debian minbase rootfs is built with mmdebstrap first. Each row is the
median of N runs: wall time, CPU time (user+sys of the whole process tree), peak memory (RSS
of the whole process tree, sampled from /proc every 10 ms and summed over live processes, plus
the growth of the machine's Shmem, where memory files live) and output size. Pack is compared
with `tar | zstd`, and with `tar | tee sha256 | zstd` (unpack likewise): a template records the
sha256 of its rootfs tar, unpack verifies it, and on a CPU without SHA instructions that hash
costs about as much CPU as zstd -3.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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


def shmem() -> int:
    """Shared memory in use on the machine (KiB): memfd files count here, not in any RSS."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1])
    return 0


def measure(argv: list[str] | str, output: Path) -> tuple[float, float, int, int]:
    """(wall s, cpu s, peak memory KiB, output bytes) of one run; memory is the RSS of the
    process tree plus the growth of the machine's shared memory (memfd files)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    shared = shmem()
    start = time.monotonic()
    process = subprocess.Popen(argv, shell=isinstance(argv, str), stdout=subprocess.DEVNULL)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid) + max(0, shmem() - shared))
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


def median_run(runs: int, argv: list[str] | str, output: Path, reset: list[Path]) -> list[float]:
    results = []
    for _ in range(runs):
        for path in reset:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
        subprocess.run(["sync"], check=True)
        results.append(measure(argv, output))
    return [statistics.median(column) for column in zip(*results, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", nargs="?", type=Path, help="rootfs directory (default: minbase)")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default: 3)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: tmp)")
    args = parser.parse_args()
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
    env_epoch = "SOURCE_DATE_EPOCH=1700000000"
    rows: list[tuple[str, list[float]]] = []
    ref_tar = work / "ref.tar.zst"
    rows.append(("tmpl2deb pack", median_run(
        args.runs, f"{env_epoch} {' '.join(TMPL2DEB)} pack -q {rootfs} --name bench "
        f"--version 1 -o {out}", out / "tmpl-bench_1_amd64.deb", [])))  # fmt: skip
    deb = next(out.glob("*.deb"))
    make_tar = f"tar -C {rootfs} -cf - {TAR_FLAGS} --sort=name ."
    compress = f"zstd -q -T0 -3 > {ref_tar}"
    rows.append(("tar | zstd -T0 -3", median_run(
        args.runs, f"{make_tar} | {compress}", ref_tar, [])))  # fmt: skip
    rows.append(("tar | tee sha256 | zstd", median_run(
        args.runs, hashed(make_tar, compress), ref_tar, [])))  # fmt: skip
    rows.append(("dpkg-deb -b (naive)", _dpkg_deb_row(args.runs, rootfs, work)))
    dest, ref_dest = work / "dest", work / "ref-dest"
    rows.append(("tmpl2deb unpack", median_run(
        args.runs, [*TMPL2DEB, "unpack", "-q", str(deb), str(dest)], dest, [dest])))  # fmt: skip
    decompress = f"mkdir {ref_dest} && zstd -dc {ref_tar}"
    extract = f"tar -C {ref_dest} -x {TAR_FLAGS}"
    rows.append(("zstd -dc | tar -x", median_run(
        args.runs, f"{decompress} | {extract}", ref_dest, [ref_dest])))  # fmt: skip
    rows.append(("zstd -dc | tee sha256 | tar", median_run(
        args.runs, hashed(decompress, extract), ref_dest, [ref_dest])))  # fmt: skip
    repo, ref_repo = work / "repo", work / "ref-repo"
    rows.append(("tmpl2deb publish", median_run(
        args.runs, [*TMPL2DEB, "publish", "-q", "--repo", str(repo), str(deb)], repo,
        [repo])))  # fmt: skip
    rows.append(("reprepro includedeb", median_run(
        args.runs, f"mkdir -p {ref_repo}/conf && printf 'Codename: bookworm\\nArchitectures: "
        f"amd64\\nComponents: main\\n' > {ref_repo}/conf/distributions && reprepro -s "
        f"-b {ref_repo} includedeb bookworm {deb}", ref_repo, [ref_repo])))  # fmt: skip
    rows.append(("stage+unpack (HTTP)", _stage_row(args.runs, repo, work)))
    refs = {"pack": 1, "unpack": 5, "publish": 8, "stage": 5}
    rootfs_tar = _size_of_tar(rootfs)
    print(f"rootfs: {rootfs}  ({rootfs_tar / 2**20:.1f} MiB as tar), median of {args.runs} runs")
    print(
        f"{'step':<28}{'wall s':>8}{'cpu s':>8}{'peak mem MiB':>14}{'output MiB':>12}{'ratio':>8}"
    )
    for name, (wall, cpu, rss, size) in rows:
        kind = next((k for k in ("unpack", "stage", "publish") if k in name), "pack")
        kind = "unpack" if name.startswith("zstd -dc") else kind
        kind = "publish" if name == "reprepro includedeb" else kind
        base = rows[refs[kind]][1][0]
        print(f"{name:<28}{wall:>8.2f}{cpu:>8.2f}{rss / 1024:>14.1f}{size / 2**20:>12.1f}"
              f"{wall / base:>7.2f}x")  # fmt: skip
    print(
        f"pack / (tar | tee sha256 | zstd): {rows[0][1][0] / rows[2][1][0]:.2f}x, "
        f"unpack / (zstd -dc | tee sha256 | tar): {rows[4][1][0] / rows[6][1][0]:.2f}x"
    )
    payload = rows[0][1][3] / rootfs_tar
    print(f"payload / rootfs tar: {payload:.3f}")
    return 0


def hashed(upstream: str, downstream: str) -> list[str]:
    """`upstream | downstream` with the sha256 a template records of the stream in between,
    by the OpenSSL that Python's hashlib uses (coreutils' sha256sum is 3x slower here)."""
    tee = "tee >(openssl dgst -sha256 >/dev/null)"
    return ["bash", "-c", f"{upstream} | {tee} | {downstream}; wait $!"]


def _stage_row(runs: int, repo: Path, work: Path) -> list[float]:
    """stage from the published repository over HTTP on loopback, then unpack the staging root."""
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                               "0"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split(" port ")[1].split()[0]
        staging, dest = work / "staging", work / "stage-dest"
        source = f"deb [trusted=yes] http://127.0.0.1:{port} bookworm main"
        tool = " ".join(TMPL2DEB)
        return median_run(runs, f"{tool} stage -q --source '{source}' tmpl-bench {staging} && "
                          f"{tool} unpack -q {staging} {dest}", dest, [staging, dest])  # fmt: skip
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


def _dpkg_deb_row(runs: int, rootfs: Path, work: Path) -> list[float]:
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
    target = work / "naive.deb"
    try:
        return median_run(runs, ["dpkg-deb", "--nocheck", "-Zzstd", "-z3", "-b", str(merged),
                                 str(target)], target, [])  # fmt: skip
    finally:
        subprocess.run(["umount", merged], check=True)


if __name__ == "__main__":
    sys.exit(main())
