"""The .deb container: ar headers, stored gzip members, CRC combination."""

from __future__ import annotations

import gzip
import io
import os
import zlib

import pytest

from tmpl2deb.debformat import ar_header, control_tar
from tmpl2deb.errors import FormatError
from tmpl2deb.storedgzip import (
    STORED_BLOCK,
    StoredGzipWriter,
    content_size,
    crc32_combine,
    stored_gzip,
    stored_size,
)


def test_ar_header_is_60_bytes_like_dpkg_deb() -> None:
    header = ar_header("data.tar.gz", 1234, 5)
    assert len(header) == 60 and header.endswith(b"`\n")
    assert header.startswith(b"data.tar.gz     5           0     0     100644  1234      ")


def test_ar_header_refuses_oversized_members() -> None:
    with pytest.raises(FormatError, match="more than a .deb member"):
        ar_header("data.tar.gz", 10**10, 0)


@pytest.mark.parametrize("size", [0, 1, STORED_BLOCK - 1, STORED_BLOCK, 3 * STORED_BLOCK + 7])
def test_stored_gzip_is_valid_gzip_of_known_size(size: int) -> None:
    data = os.urandom(size)
    stream = stored_gzip(data)
    assert gzip.decompress(stream) == data
    assert len(stream) == stored_size(size)
    assert content_size(len(stream)) == size


def test_content_size_inverts_stored_size_for_large_members() -> None:
    for size in (51_071_134, 10**9 + 12345, 65535 * 1000):
        assert content_size(stored_size(size)) == size
    with pytest.raises(FormatError):
        content_size(stored_size(STORED_BLOCK) - 2)  # falls in the gap of a block header


def test_crc32_combine_matches_zlib() -> None:
    a, b = os.urandom(1000), os.urandom(70000)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert crc32_combine(zlib.crc32(a), 0, 0) == zlib.crc32(a)


def test_patching_a_segment_keeps_the_stream_valid() -> None:
    out = io.BytesIO()
    writer = StoredGzipWriter(out)
    writer.write(b"x" * (STORED_BLOCK - 3))
    segment = writer.split()
    writer.write(b"placeholder")  # straddles a block boundary
    writer.split()
    writer.write(b"y" * 100)
    writer.close()
    writer.patch(segment, STORED_BLOCK - 3, b"final-value")
    assert (
        gzip.decompress(out.getvalue()) == b"x" * (STORED_BLOCK - 3) + b"final-value" + b"y" * 100
    )


def test_control_tar_is_padded_to_the_reserved_size() -> None:
    small = control_tar(b"Package: a\n", 0, 10240)
    assert len(small) == 10240
    with pytest.raises(FormatError, match="reserved"):
        control_tar(b"x" * 20000, 0, 10240)
