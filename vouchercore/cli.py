"""The ``vouchercore`` command.

``vouchercore simulate`` runs a seeded day of POS traffic — terminals as threads on one engine
(in-memory by default), or as OS processes on a shared SQLite file or PostgreSQL database — and
audits it. Exit status: 0 audit OK, 1 the audit found a broken invariant (or the run failed),
2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from vouchercore import __version__
from vouchercore.errors import VoucherError
from vouchercore.simulation import SimulationError, simulate

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
        help="run a seeded day of POS traffic on one voucher book and audit it",
        description=(
            "Several POS terminals run a seeded random day of traffic with a simulated clock, "
            "then the audit checks every invariant. Terminals are threads on one engine "
            "(--terminals), or OS processes each with its own engine on a shared SQLite file "
            "or PostgreSQL database (--processes with --store); the processes share the "
            "simulated clock through shared memory. The store must hold no voucher yet."
        ),
    )
    sim.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sim.add_argument(
        "--terminals", type=_positive, default=None, help="POS terminals as threads (default 4)"
    )
    sim.add_argument(
        "--processes",
        type=_positive,
        default=None,
        metavar="N",
        help="POS terminals as N OS processes on a shared SQL store (needs --store)",
    )
    sim.add_argument("--vouchers", type=_positive, default=200, help="vouchers (default 200)")
    sim.add_argument(
        "--operations", type=_positive, default=20_000, help="operations in all (default 20000)"
    )
    sim.add_argument(
        "--store",
        default="memory://",
        help=(
            "store URL: memory:// (default), sqlite:///path.db[?synchronous=NORMAL] or "
            "postgresql://user@host/db?schema=NAME; must hold no voucher yet"
        ),
    )
    return parser


def _error(message: str, status: int) -> int:
    print(f"vouchercore: error: {message}", file=sys.stderr)
    return status


def _simulate(args: argparse.Namespace, out: TextIO) -> int:
    if args.processes is not None and args.terminals is not None:
        return _error("give --terminals (threads) or --processes (processes), not both", 2)
    if args.processes is not None and args.store.split("://", 1)[0].lower() == "memory":
        return _error(
            "--processes needs a store shared between processes: "
            "--store sqlite:///path.db or --store postgresql://…",
            2,
        )
    bar = ProgressBar(args.operations, "simulating")
    try:
        report = simulate(
            seed=args.seed,
            terminals=args.processes or args.terminals or 4,
            vouchers=args.vouchers,
            operations=args.operations,
            store=args.store,
            processes=args.processes is not None,
            progress=bar,
        )
    except ValueError as error:  # bad arguments: the store URL, a store already in use
        return _error(str(error), 2)
    except ImportError as error:  # the store's optional driver is not installed
        return _error(f"{error} (is the store's extra installed?)", 2)
    except (SimulationError, VoucherError) as error:  # the store or a terminal failed
        return _error(str(error), 1)
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
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`)
        # point stdout at devnull so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
