#!/usr/bin/python3
"""A template repository shared by many writers and readers, with real processes and signals.

Usage: bench/repo_stress.py [--work DIR] [--writers N] [--kills N] [--seconds S]

1. N concurrent `tmpl2deb publish` into a new repository, then N into the existing one
   (different templates, and several versions of one template);
2. publishes killed with SIGKILL after increasing delays, each followed by one that must succeed;
3. readers during publishes: `apt-get update` of the repository over HTTP on loopback in a loop
   while publishes run in another loop, for S seconds.
After each phase the repository must be readable by apt. Prints how many ran and how many failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TMPL2DEB = [sys.executable, "-m", "tmpl2deb"]


def tmpl2deb(*argv: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TMPL2DEB, *map(os.fspath, argv)], capture_output=True, text=True, check=check
    )


def make_templates(work: Path, writers: int) -> tuple[list[Path], list[Path]]:
    """WRITERS templates of different names, and WRITERS versions of one template."""
    tree = work / "tree"
    (tree / "etc").mkdir(parents=True, exist_ok=True)
    (tree / "etc/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    out = work / "debs"
    out.mkdir(exist_ok=True)
    names, versions = [], []
    for i in range(writers):
        (tree / "etc/stamp").write_text(f"{i}\n")
        args = ["pack", tree, "--arch", "amd64", "-o", out]
        names.append(Path(tmpl2deb(*args, "--name", f"n{i}").stdout.strip()))
        versions.append(Path(tmpl2deb(*args, "--name", "multi", "--version", f"1.{i}").stdout))
    return names, [Path(str(v).strip()) for v in versions]


def apt_reads(repo_url: str, root: Path) -> tuple[bool, str]:
    """apt-get update of REPO_URL into a throw-away apt root: (ok, last error line)."""
    for name in (
        "etc/apt/sources.list.d",
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
    ):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    (root / "etc/apt/sources.list.d/t.list").write_text(
        f"deb [trusted=yes] {repo_url} bookworm main\n"
    )
    conf = root / "apt.conf"
    conf.write_text(
        f'Dir "{root}/";\nDir::State::status "{root}/status";\n' 'APT::Sandbox::User "root";\n'
    )
    for entry in (root / "var/lib/apt/lists").glob("*_*"):
        entry.unlink()
    result = subprocess.run(
        ["apt-get", "update", "--error-on=any", "-q"],
        env={**os.environ, "APT_CONFIG": os.fspath(conf)},
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
              if line.startswith(("E:", "W:", "Err"))]  # fmt: skip
    return result.returncode == 0 and not errors, (errors or [""])[-1]


def concurrent(repo: Path, debs: list[Path], extra: list[str]) -> list[str]:
    procs = [subprocess.Popen([*TMPL2DEB, "publish", *extra, "--repo", repo, deb],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for deb in debs]  # fmt: skip
    failures = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            failures.append(err.strip().splitlines()[-1] if err.strip() else "?")
    return failures


def readable(repo: Path, work: Path) -> str:
    ok, error = apt_reads(f"file://{repo}", work / "check-root")
    checked = tmpl2deb("list", "--check", "--repo", repo, check=False)
    check = "list --check passes" if checked.returncode == 0 else checked.stderr.strip()
    return ("apt reads it" if ok else f"apt fails: {error}") + f"; {check}"


def phase_concurrent(work: Path, names: list[Path], versions: list[Path]) -> None:
    repo = work / "repo-new"
    failed = concurrent(repo, names, [])
    print(f"{len(names)} concurrent publishes into a new repository: {len(failed)} failed; "
          f"{readable(repo, work)}")  # fmt: skip
    for line in sorted(set(failed)):
        print(f"    {line}")
    failed = concurrent(repo, versions, [])
    listing = tmpl2deb("list", "--repo", repo, check=False).stdout
    multi = [line.split()[1] for line in listing.splitlines() if line.startswith("tmpl-multi")]
    print(f"{len(versions)} concurrent publishes of versions of one template into it: "
          f"{len(failed)} failed; holds {' '.join(multi)}; {readable(repo, work)}")  # fmt: skip
    for line in sorted(set(failed)):
        print(f"    {line}")


def busy(repo: Path) -> bool:
    """A writer is inside the repository: reprepro's lock file or a tmpl2deb temporary."""
    return (repo / "db/lockfile").exists() or any(repo.glob("**/.tmpl2deb-*"))


def kill_during(repo: Path, deb: Path, delay: float, when_busy: bool) -> bool:
    """Start a publish and SIGKILL it; whether it was still running."""
    proc = subprocess.Popen([*TMPL2DEB, "publish", "--force", "--repo", repo, deb],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    end = time.monotonic() + delay
    while time.monotonic() < end and proc.poll() is None:
        if when_busy and busy(repo):
            break
        time.sleep(0.002)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a CI timeout or OOM kill does
    proc.wait()
    return alive


def big_templates(work: Path, count: int) -> list[Path]:
    """COUNT versions of a template with 64 MiB that does not compress: a publish of one takes
    long enough to be killed in the middle."""
    tree = work / "big"
    (tree / "etc").mkdir(parents=True, exist_ok=True)
    (tree / "etc/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    (tree / "blob").write_bytes(os.urandom(64 << 20))
    out = work / "big-debs"
    out.mkdir(exist_ok=True)
    args = ["pack", tree, "--arch", "amd64", "-o", out, "--name", "big"]
    return [Path(tmpl2deb(*args, "--version", f"1.{i}").stdout.strip()) for i in range(count)]


def phase_kills(work: Path, kills: int) -> None:
    repo = work / "repo-kill"
    versions = big_templates(work, kills + 1)
    tmpl2deb("publish", "--repo", repo, versions[0])
    wedged = killed = 0
    for i in range(kills):
        deb = versions[1 + i % (len(versions) - 1)]
        # odd kills: as soon as a writer is inside the repository; even: after a fixed delay
        killed += kill_during(repo, deb, 0.2 + 0.02 * i, when_busy=i % 2 == 1)
        after = tmpl2deb("publish", "--force", "--repo", repo, deb, check=False)
        if after.returncode:
            wedged += 1
            print(f"    after kill {i + 1}: {after.stderr.strip().splitlines()[-1][:200]}")
    print(f"{killed} of {kills} publishes killed (SIGKILL inside the repository, or after "
          f"0.2..{0.2 + 0.02 * (kills - 1):.2f} s): the next publish failed {wedged} times; "
          f"{readable(repo, work)}")  # fmt: skip


def phase_readers(work: Path, versions: list[Path], seconds: float) -> None:
    repo = work / "repo-read"
    tmpl2deb("publish", "--repo", repo, versions[0])
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"],
                              cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)  # fmt: skip
    assert server.stdout is not None
    url = "http://127.0.0.1:" + server.stdout.readline().split(" port ")[1].split()[0]
    stop = threading.Event()
    publishes = [0, 0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            done = tmpl2deb("publish", "--force", "--repo", repo, versions[i % len(versions)],
                            check=False)  # fmt: skip
            publishes[0 if done.returncode == 0 else 1] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    reads, failed, errors = 0, 0, set()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            ok, error = apt_reads(url, work / "reader-root")
            reads += 1
            if not ok:
                failed += 1
                errors.add(error)
    finally:
        stop.set()
        thread.join()
        server.kill()
        server.wait()
    print(f"readers during publishes ({seconds:.0f} s): {publishes[0]} publishes "
          f"({publishes[1]} failed), {reads} apt-get update, {failed} failed")  # fmt: skip
    for line in sorted(errors):
        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work, prefix="repo-stress.") as tmp:
        work = Path(tmp)
        names, versions = make_templates(work, args.writers)
        phase_concurrent(work, names, versions)
        phase_kills(work, args.kills)
        phase_readers(work, versions, args.seconds)


if __name__ == "__main__":
    main()
