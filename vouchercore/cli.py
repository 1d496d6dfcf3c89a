"""The ``vouchercore`` command.

``vouchercore simulate`` runs a seeded day of POS traffic on the in-memory engine and audits
it (exit status 1 if the audit finds a broken invariant, 2 for bad arguments).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from vouchercore import __version__
from vouchercore.simulation import simulate

__all__ = ["ProgressBar", "main"]


class ProgressBar:
    """A one-line progress bar on a terminal; silent when the stream is not a TTY."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0
        self._started = time.perf_counter()

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = width * min(done, self.total) // self.total
        rate = done / (now - self._started) if now > self._started else 0.0
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done:,}/{self.total:,} {rate:,.0f}/s"
        )
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vouchercore",
        description="Vouchers with Voucherify's semantics, in-process.",
    )
    parser.add_argument("--version", action="version", version=f"vouchercore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser(
        "simulate",
        help="run a seeded day of POS traffic on one engine and audit it",
        description=(
            "Several POS terminals (threads) run a seeded random day of traffic on one "
            "in-memory engine with a simulated clock, then the audit checks every invariant."
        ),
    )
    sim.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sim.add_argument("--terminals", type=_positive, default=4, help="POS terminals (default 4)")
    sim.add_argument("--vouchers", type=_positive, default=200, help="vouchers (default 200)")
    sim.add_argument(
        "--operations", type=_positive, default=20_000, help="operations in all (default 20000)"
    )
    sim.add_argument(
        "--store",
        default="memory://",
        help="store URL (this version: memory:// only, the default)",
    )
    return parser


def _simulate(args: argparse.Namespace, out: TextIO) -> int:
    if args.store.split("://", 1)[0].lower() != "memory":
        print(f"vouchercore: error: unsupported store {args.store!r}", file=sys.stderr)
        return 2
    bar = ProgressBar(args.operations, "simulating")
    try:
        report = simulate(
            seed=args.seed,
            terminals=args.terminals,
            vouchers=args.vouchers,
            operations=args.operations,
            progress=bar,
        )
    finally:
        bar.close()
    for line in report.lines():
        print(line, file=out)
    return 0 if report.ok else 1


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {"simulate": _simulate}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vouchercore`` console script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except KeyboardInterrupt:
        print("vouchercore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
