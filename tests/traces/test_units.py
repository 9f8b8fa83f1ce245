from __future__ import annotations

import pytest

from mittd.traces.units import parse_duration, parse_duration_us, parse_size


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


@pytest.mark.parametrize(("text", "bare", "us"), [
    ("750", "us", 750.0), ("750", "s", 750e6), ("250ns", "s", 0.25), ("1.5e3us", "s", 1500.0),
    (" 2 MS ", "us", 2000.0), ("500µs", "s", 500.0), ("2m", "us", 120e6), (".5h", "us", 1.8e9),
])
def test_one_duration_grammar_the_caller_names_the_bare_unit(text: str, bare: str,
                                                             us: float) -> None:
    assert parse_duration_us(text, bare=bare) == pytest.approx(us)


def test_run_times_and_slos_share_the_grammar() -> None:
    from mittd.predictor.slo import parse_slo

    for text in ("250us", "0.5ms", "2s", "1e3us"):
        assert parse_slo(text, [1.0]) == pytest.approx(parse_duration(text) * 1e6)
    assert parse_slo("30", [1.0]) == 30.0 and parse_duration("30") == 30.0  # bare: µs vs s


@pytest.mark.parametrize("text", ["", "5 minutes", "1.2.3ms", "-5us", "inf", "5 sec"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="--x"):
        parse_duration_us(text, "--x")
