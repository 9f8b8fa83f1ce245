from __future__ import annotations

import pytest

from mittd.traces.units import parse_duration, parse_size


@pytest.mark.parametrize(("text", "value"), [
    ("4096", 4096), ("4k", 4096), ("4K", 4096), ("64M", 64 << 20), ("1GiB", 1 << 30),
    ("1.5k", 1536), ("2t", 2 << 40),
])
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-4k", "4x", "1.0001k"])
def test_bad_sizes_name_the_field(text: str) -> None:
    with pytest.raises(ValueError, match="--size"):
        parse_size(text, "--size")


@pytest.mark.parametrize(("text", "value"), [
    ("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("250us", 250e-6),
])
def test_durations(text: str, value: float) -> None:
    assert parse_duration(text) == pytest.approx(value)


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="--runtime"):
        parse_duration("soon", "--runtime")
