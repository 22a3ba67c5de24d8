"""info and unpack: read a template (a .deb or a staging root), verify it, extract its rootfs."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tmpl2deb import debformat, rootfs
from tmpl2deb.errors import (
    FormatError,
    IntegrityError,
    MetadataError,
    PrivilegeError,
)
from tmpl2deb.metadata import TemplateMetadata
from tmpl2deb.run import Process, pipeline_failed, spawn
from tmpl2deb.tarstream import SafetyCheck, TarFilter, pump, writer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Template:
    """A template found in a .deb or installed in a staging root, with its checked metadata."""

    source: Path
    metadata: TemplateMetadata
    metadata_json: bytes
    manifest: bytes
    payload: debformat.Region
    control: dict[str, str]


def open_template(source: Path, package: str = "") -> Template:
    """Read the template at SOURCE (a .deb, or a staging root with one template installed)."""
    try:
        if source.is_dir():
            return _from_staging(source, package)
        source.stat()
    except OSError as err:
        raise FormatError(f"cannot read {source}: {err.strerror}") from err
    return _from_deb(source)


def _from_deb(path: Path) -> Template:
    from debian.deb822 import Deb822  # imported late: it is slow to import

    layout = debformat.read_layout(path)
    control = Deb822(debformat.read_control(layout))
    metadata_json = layout.metadata.read()
    template = Template(
        source=path,
        metadata=_parse(path, metadata_json),
        metadata_json=metadata_json,
        manifest=layout.manifest.read(),
        payload=layout.payload,
        control=dict(control),
    )
    _check_consistent(template)
    return template


def _from_staging(root: Path, package: str) -> Template:
    base = root / debformat.TEMPLATES_DIR
    names = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    if package:
        names = [n for n in names if n == package]
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise FormatError(
            f"{root}: expected one template under /{debformat.TEMPLATES_DIR} "
            f"(found: {found}); name it with --package"
        )
    directory = base / names[0]
    try:
        metadata_json = (directory / debformat.METADATA).read_bytes()
        manifest = (directory / debformat.MANIFEST).read_bytes()
        payload_path = directory / debformat.PAYLOAD
        size = payload_path.stat().st_size
    except OSError as err:
        raise FormatError(
            f"{directory}: incomplete template ({err.strerror}: {err.filename})"
        ) from err
    metadata = _parse(directory, metadata_json)
    template = Template(
        source=root,
        metadata=metadata,
        metadata_json=metadata_json,
        manifest=manifest,
        payload=debformat.Region(payload_path, debformat.Span(0, size)),
        control={},
    )
    _check_consistent(template)
    return template


def _parse(where: Path, metadata_json: bytes) -> TemplateMetadata:
    try:
        return TemplateMetadata.from_json(metadata_json)
    except MetadataError as err:
        raise FormatError(f"{where}: bad metadata.json ({err})") from err


def _check_consistent(template: Template) -> None:
    """metadata.json, the control fields and the manifest must agree with each other."""
    meta = template.metadata
    if template.control and TemplateMetadata.from_control(template.control) != meta:
        raise IntegrityError(
            f"{template.source}: control fields and metadata.json disagree; the package was altered"
        )
    if hashlib.sha256(template.manifest).hexdigest() != meta.manifest_sha256:
        raise IntegrityError(f"{template.source}: manifest does not match its recorded sha256")


def unpack(source: Path, dest: Path, package: str = "") -> Path:
    """Extract the rootfs of the template at SOURCE into DEST (absent or empty), verified."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"unpacking into {dest} needs root to restore owners, devices and capabilities; "
            "run as root (sudo)"
        )
    template = open_template(source, package)
    check_dest(dest)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmpl2deb-"))
    log.info("Unpacking %s (%s) into %s", template.metadata.package, template.source, dest)
    try:
        _extract(template, staging)
        if dest.exists():
            dest.rmdir()  # empty, checked above; rename() cannot replace it on every fs
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise FormatError(f"{dest} exists and is not a directory; give a new or empty directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise FormatError(f"{dest} is not empty; unpack only into a new or empty directory")
    if not dest.parent.is_dir():
        raise FormatError(f"parent directory {dest.parent} does not exist")


def _extract(template: Template, target: Path) -> None:
    meta = template.metadata
    with ExitStack() as stack:
        decompressor = stack.enter_context(_decompress(template))
        tar = stack.enter_context(spawn(rootfs.tar_extract_argv(target), stdin=subprocess.PIPE))
        to_tar = writer(tar.stdin.fileno())

        def write(data: bytes | memoryview) -> None:
            try:
                to_tar(data)
            except BrokenPipeError:
                # GNU tar may exit at the end-of-archive marker without reading the padding
                # after it; its exit status (checked below) tells whether it was content.
                if not tar_filter.ended:
                    raise

        tar_filter = TarFilter(write, check=SafetyCheck())
        try:
            pump(decompressor.stdout.fileno(), tar_filter, progress=_progress)
        except (BrokenPipeError, FormatError) as err:
            pipeline_failed(err, upstream=decompressor, downstream=tar)
        decompressor.wait()
        tar.stdin.close()
        tar.wait()
    if tar_filter.size != meta.rootfs_size or tar_filter.sha256.hexdigest() != meta.rootfs_sha256:
        raise IntegrityError(
            f"{template.source}: rootfs payload does not match its recorded sha256 "
            f"({tar_filter.sha256.hexdigest()[:16]}… != {meta.rootfs_sha256[:16]}…); "
            "the template is corrupt, fetch it again"
        )


def _progress(done: int) -> None:
    log.info("... %d MiB of rootfs tar unpacked", done >> 20)


@contextmanager
def _decompress(template: Template) -> Iterator[Process]:
    """zstd -dc of the payload span (of the .deb, or the whole file in a staging root)."""
    argv = ["zstd", "--decompress", "--stdout", "--quiet"]
    with spawn(argv, stdin=subprocess.PIPE) as process:
        feeder = threading.Thread(target=_feed, args=(template, process), daemon=True)
        feeder.start()
        try:
            yield process
        finally:
            if process.popen.poll() is None:
                process.popen.kill()  # on errors: else the feeder waits for zstd forever
            feeder.join()


def _send(out: int, fd: int, offset: int, left: int) -> None:
    while left:
        sent = os.sendfile(out, fd, offset, left)
        if not sent:
            return  # truncated file; zstd reports the short frame
        offset += sent
        left -= sent


def _feed(template: Template, process: Process) -> None:
    """Copy the payload span into zstd's stdin without passing it through Python buffers."""
    out = process.stdin.fileno()
    try:
        with template.payload.path.open("rb") as f:
            for offset, length in template.payload.pieces():
                _send(out, f.fileno(), offset, length)
    except OSError:
        pass  # zstd exited early; its error is reported by the reader side
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
