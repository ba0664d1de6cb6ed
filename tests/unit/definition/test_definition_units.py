"""Sizes: parsing to whole bytes and the shortest exact spelling."""

from __future__ import annotations

import pytest

from maqet_engine.definition.units import SizeError, format_size, parse_size

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("value", "bare_unit", "expected"),
    [
        ("512M", 1, 512 * M),
        ("512m", 1, 512 * M),
        ("512MB", 1, 512 * M),
        ("512MiB", 1, 512 * M),
        ("512mib", 1, 512 * M),
        ("512 M", 1, 512 * M),
        ("524288K", 1, 512 * M),
        ("2G", 1, 2 * G),
        ("2gb", 1, 2 * G),
        ("1T", 1, T),
        ("1.5G", 1, 3 * G // 2),
        (".5K", 1, 512),
        ("4096", 1, 4096),
        (4096, 1, 4096),
        (512, M, 512 * M),
        ("512", M, 512 * M),
        (0.5, M, M // 2),
        ("100b", M, 100),
        ("100B", 1, 100),
        (" 1G ", 1, G),
        (0, 1, 0),
    ],
)
def test_parse_size(value: object, bare_unit: int, expected: int):
    assert parse_size(value, bare_unit=bare_unit) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("lots", "is not a size"),
        ("", "is not a size"),
        ("-1G", "is not a size"),
        ("1X", "is not a size"),
        ("1P", "is not a size"),
        ("1iB", "is not a size"),
        ("1 G B", "is not a size"),
        ("1e3", "is not a size"),
        (True, "is not a size"),
        (None, "is not a size"),
        ([1], "is not a size"),
        (1e30, "is not a size"),
        ("1.3K", "is not a whole number of bytes"),
        ("0.1", "is not a whole number of bytes"),
    ],
)
def test_parse_size_refuses(value: object, reason: str):
    with pytest.raises(SizeError, match=reason):
        parse_size(value, bare_unit=1)


@pytest.mark.parametrize(
    ("n_bytes", "text"),
    [(512 * M, "512M"), (2 * G, "2G"), (T, "1T"), (3 * G // 2, "1536M"), (1000, "1000B"),
     (4 * K, "4K"), (0, "0B")],
)
def test_format_size(n_bytes: int, text: str):
    assert format_size(n_bytes) == text
    assert parse_size(text, bare_unit=1) == n_bytes
