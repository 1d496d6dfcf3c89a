"""Voucher code generation in the spirit of Voucherify's ``code_config``.

A :class:`CodeConfig` says what a code looks like: *length* random characters from *charset*
(default: the 62 alphanumerics), or a *pattern* whose ``#`` placeholders are replaced by random
characters (``"SPRING-####-##"``; *length* is then ignored), between a *prefix* and a *postfix*.
:class:`CodeDrawer` draws such codes from a source of random bytes — the OS CSPRNG by default,
the engine's seeded generator when the engine has a seed — without modulo bias.

The code space (``len(charset) ** placeholders``) must hold at least twice the codes asked for
(:func:`check_code_space`): drawing at random then collides with codes already drawn less than
half of the time even for the last code, so generation ends quickly; beyond that the cost of
finding the last free codes explodes (the coupon collector), and a space that cannot hold them
at all would loop forever.

Example:
    >>> import os
    >>> config = CodeConfig(pattern="GIFT-####", charset="0123456789")
    >>> config.placeholders, config.space
    (4, 10000)
    >>> [code] = CodeDrawer(config, os.urandom).draw(1)
    >>> code.startswith("GIFT-") and code[5:].isdigit()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from vouchercore.domain.values import MAX_CODE_LENGTH, shown, text_problem
from vouchercore.errors import InvalidPayload
from vouchercore.ids import ALPHANUMERIC

__all__ = [
    "ALPHANUMERIC",
    "PLACEHOLDER",
    "SPACE_MARGIN",
    "CodeConfig",
    "CodeDrawer",
    "GenerationReport",
    "check_code_space",
]

#: The character of a pattern that a random character replaces.
PLACEHOLDER: Final = "#"
#: The code space must hold this many times the codes asked for.
SPACE_MARGIN: Final = 2
#: The largest charset (two random bytes per character).
MAX_CHARSET: Final = 65_536


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidPayload(f"{name} must be a string, got {type(value).__name__}")
    return value


@attrs.frozen(kw_only=True)
class CodeConfig:
    """What a generated code looks like (Voucherify's ``code_config``).

    Attributes:
        length: how many random characters (1–100), when there is no *pattern*.
        charset: the characters to draw from: printable, no whitespace, each once.
        prefix: text before the random part.
        postfix: text after it.
        pattern: e.g. ``"AB-####"``: each ``#`` becomes a random character, the rest is kept;
            overrides *length*.

    Raises:
        InvalidPayload: any field malformed, or a code that would be longer than 100
            characters or begin or end with whitespace.
    """

    length: int = 8
    charset: str = ALPHANUMERIC
    prefix: str = ""
    postfix: str = ""
    pattern: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.pattern is None:
            if type(self.length) is not int or not 1 <= self.length <= MAX_CODE_LENGTH:
                raise InvalidPayload(
                    f"length must be an int from 1 to {MAX_CODE_LENGTH}, got {shown(self.length)}"
                )
        elif PLACEHOLDER not in _text(self.pattern, "pattern"):
            raise InvalidPayload(
                f"pattern {self.pattern!r} has no {PLACEHOLDER!r} placeholder for the random "
                "characters (e.g. 'PROMO-####')"
            )
        charset = _text(self.charset, "charset")
        if not charset:
            raise InvalidPayload("charset must hold at least one character")
        if len(set(charset)) != len(charset):
            raise InvalidPayload(f"charset {charset[:40]!r} repeats a character")
        if len(charset) > MAX_CHARSET:
            raise InvalidPayload(f"charset may hold at most {MAX_CHARSET} characters")
        if any(c.isspace() or not c.isprintable() for c in charset):
            raise InvalidPayload("charset must hold printable characters only, no whitespace")
        _text(self.prefix, "prefix")
        _text(self.postfix, "postfix")
        sample = self.compose(charset[0] * self.placeholders)
        problem = text_problem(sample, MAX_CODE_LENGTH)
        if problem is not None:
            raise InvalidPayload(f"a generated code such as {sample[:40]!r} {problem}")

    @property
    def placeholders(self) -> int:
        """How many random characters a code has."""
        return self.length if self.pattern is None else self.pattern.count(PLACEHOLDER)

    @property
    def space(self) -> int:
        """How many different codes this configuration can make."""
        space: int = len(self.charset) ** self.placeholders
        return space

    def compose(self, drawn: str) -> str:
        """The code made of the random characters *drawn* (``placeholders`` of them)."""
        if self.pattern is None:
            return self.prefix + drawn + self.postfix
        parts = self.pattern.split(PLACEHOLDER)
        body = parts[0] + "".join(c + rest for c, rest in zip(drawn, parts[1:], strict=True))
        return self.prefix + body + self.postfix


def check_code_space(config: CodeConfig, count: int) -> None:
    """Refuse, before anything is drawn or stored, a *count* the code space cannot hold with
    the margin :data:`SPACE_MARGIN`.

    Raises:
        InvalidPayload: ``count * SPACE_MARGIN > config.space``; the message says how large
            the space is and how to enlarge it.
    """
    space = config.space
    if count * SPACE_MARGIN > space:
        shape = (
            f"pattern {config.pattern!r}"
            if config.pattern is not None
            else (f"length {config.length}")
        )
        raise InvalidPayload(
            f"cannot generate {count:,} unique codes: {shape} with a charset of "
            f"{len(config.charset)} characters makes only {space:,} codes, and generation needs "
            f"at least {SPACE_MARGIN}× the codes asked for; use more placeholders (or a longer "
            "length) or a larger charset"
        )


class CodeDrawer:
    """Draws codes of a :class:`CodeConfig` from a source of random bytes, uniformly (bytes
    that would bias the draw are rejected, never folded with a modulo).

    Args:
        config: what the codes look like.
        random_bytes: ``random_bytes(n)`` returns *n* random bytes (:func:`os.urandom`, or a
            seeded generator's ``randbytes``).
    """

    def __init__(self, config: CodeConfig, random_bytes: Callable[[int], bytes]) -> None:
        self.config = config
        self._random_bytes = random_bytes
        charset = config.charset
        size = len(charset)
        self._size = size
        self._wide = size > 256  # two bytes per character
        unit = 65_536 if self._wide else 256
        self._accept = unit - unit % size  # values ≥ this are rejected (no modulo bias)
        self._ascii = not self._wide and charset.isascii()
        if self._ascii:  # one C-level translate maps accepted bytes to characters
            encoded = charset.encode()
            self._table = bytes(encoded[b % size] for b in range(self._accept)) + bytes(
                256 - self._accept
            )
            self._reject = bytes(range(self._accept, 256))

    def _characters(self, n: int) -> str:
        """*n* random characters of the charset."""
        chunks: list[str] = []
        missing = n
        while missing > 0:
            # ask for a little more than needed: rejected bytes are rare (< 1/2 per byte)
            want = missing + missing // 2 + 16
            if self._ascii:
                raw = self._random_bytes(want).translate(self._table, self._reject)
                got = raw[:missing].decode()
            else:
                got = self._general(want * (2 if self._wide else 1), missing)
            chunks.append(got)
            missing -= len(got)
        return "".join(chunks)

    def _general(self, nbytes: int, missing: int) -> str:
        raw = self._random_bytes(nbytes)
        if self._wide:
            values = [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw) - 1, 2)]
        else:
            values = list(raw)
        charset = self.config.charset
        size = self._size
        accept = self._accept
        return "".join([charset[v % size] for v in values if v < accept][:missing])

    def draw(self, n: int) -> list[str]:
        """*n* random codes (not necessarily distinct)."""
        config = self.config
        width = config.placeholders
        drawn = self._characters(n * width)
        if config.pattern is None:
            prefix, postfix = config.prefix, config.postfix
            return [prefix + drawn[i : i + width] + postfix for i in range(0, n * width, width)]
        template = (
            config.prefix.replace("%", "%%")
            + config.pattern.replace("%", "%%").replace(PLACEHOLDER, "%s")
            + config.postfix.replace("%", "%%")
        )
        return [template % tuple(drawn[i : i + width]) for i in range(0, n * width, width)]


@attrs.frozen(kw_only=True)
class GenerationReport:
    """The outcome of ``Engine.generate_vouchers``.

    Attributes:
        count: vouchers created (the count asked for).
        codes: the first codes created, in creation order (at most the ``keep_codes`` asked
            for: a million codes are not returned as a list — pass ``on_codes`` to receive
            every batch).
        redrawn: drawn codes that were taken already (by a stored voucher, or drawn twice)
            and replaced by fresh ones.
    """

    count: int
    codes: tuple[str, ...]
    redrawn: int
