"""Code generation's shapes and draws (vouchercore.codes): configuration checks, the code space
and its margin, uniform draws without modulo bias from any charset."""

from __future__ import annotations

import collections
import os
import random
import re

import pytest

from vouchercore.codes import (
    ALPHANUMERIC,
    SPACE_MARGIN,
    CodeConfig,
    CodeDrawer,
    check_code_space,
)
from vouchercore.errors import InvalidPayload


def test_the_default_is_eight_alphanumerics() -> None:
    config = CodeConfig()
    assert (config.placeholders, config.space) == (8, 62**8)
    codes = CodeDrawer(config, os.urandom).draw(200)
    assert all(re.fullmatch(r"[0-9A-Za-z]{8}", code) for code in codes)


def test_a_pattern_overrides_the_length_and_keeps_its_other_characters() -> None:
    config = CodeConfig(pattern="A%s-##/#", charset="xy", prefix="%", postfix="{}", length=50)
    assert (config.placeholders, config.space) == (3, 8)
    for code in CodeDrawer(config, os.urandom).draw(50):
        assert re.fullmatch(r"%A%s-[xy]{2}/[xy]\{\}", code), code


@pytest.mark.parametrize("charset", ["αβγδ", "".join(chr(0x4E00 + i) for i in range(300))])
def test_non_ascii_and_large_charsets_draw_only_their_characters(charset: str) -> None:
    config = CodeConfig(length=5, charset=charset)
    codes = CodeDrawer(config, os.urandom).draw(300)
    assert all(len(code) == 5 and set(code) <= set(charset) for code in codes)


@pytest.mark.parametrize("charset", ["0123456789", ALPHANUMERIC, "abc", "αβγδεζη"])
def test_every_character_is_about_equally_likely(charset: str) -> None:
    rng = random.Random(5)
    drawer = CodeDrawer(CodeConfig(length=10, charset=charset), rng.randbytes)
    counts = collections.Counter("".join(drawer.draw(3_000)))
    expected = 30_000 / len(charset)
    assert set(counts) == set(charset)
    # a modulo bias (256 % 62 = 8 symbols favoured) would show as 1/32 more of some
    assert max(counts.values()) < expected * 1.12
    assert min(counts.values()) > expected * 0.88


def test_the_same_bytes_draw_the_same_codes() -> None:
    config = CodeConfig(length=6)
    first = CodeDrawer(config, random.Random(1).randbytes).draw(20)
    again = CodeDrawer(config, random.Random(1).randbytes).draw(20)
    assert first == again


def test_rejected_bytes_are_replaced_not_folded() -> None:
    # 255 is above the largest multiple of 10 below 256: always rejected
    stream = iter([b"\xff" * 40, bytes(range(10)) * 4])
    drawer = CodeDrawer(CodeConfig(length=4, charset="0123456789"), lambda n: next(stream))
    assert drawer.draw(2) == ["0123", "4567"]


def test_the_code_space_needs_a_margin() -> None:
    config = CodeConfig(pattern="##", charset="0123456789")
    check_code_space(config, 100 // SPACE_MARGIN)
    with pytest.raises(InvalidPayload, match="makes only 100 codes"):
        check_code_space(config, 100 // SPACE_MARGIN + 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"length": 0}, "length"),
        ({"length": True}, "length"),
        ({"charset": "aa"}, "repeats"),
        ({"charset": "a\tb"}, "whitespace"),
        ({"charset": ""}, "at least one"),
        ({"charset": 5}, "string"),
        ({"pattern": "###", "postfix": " "}, "whitespace"),
        ({"prefix": "\x07"}, "control"),
        ({"length": 90, "prefix": "P" * 11}, "at most 100"),
    ],
)
def test_malformed_configurations_are_invalid_payload(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidPayload, match=message):
        CodeConfig(**fields)  # type: ignore[arg-type]
