"""The ``vouchercore`` command.

``vouchercore simulate`` runs a seeded day of POS traffic — terminals as threads on one engine
(in-memory by default), or as OS processes on a shared SQLite file or PostgreSQL database — and
audits it. Exit status: 0 audit OK, 1 the audit found a broken invariant (or the run failed),
2 bad arguments.

``vouchercore serve`` serves a store over Voucherify's HTTP API (:mod:`vouchercore.http`, the
``http`` extra) until SIGTERM or SIGINT; it refuses to start without credentials (exit 2).

The other commands work on a store given by ``--store URL`` (required): ``import FILE``,
``generate COUNT``, ``voucher CODE``, ``transactions CODE``, ``export CODE``,
``release CODE KEY``, ``balance CODE AMOUNT`` and ``audit``. Each prints text for people, or
one JSON document with ``--json``; import, generate and export draw a progress bar on stderr
when it is a terminal. Errors are one line on stderr (``vouchercore: error: …``; with
``--json`` also ``{"error": {...}}`` on stdout), never a traceback. Exit status:

* 0 — done;
* 1 — done in part, or refused by a voucher rule: an import with bad rows, an audit that found
  a broken invariant, a balance removal beyond what is free, a code that is taken …;
* 2 — bad input: arguments, a file that cannot be read or imported at all, malformed values;
* 3 — not found: the voucher (or session) does not exist;
* 4 — storage failure: the store cannot be opened, reached or written;
* 130 — interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, NoReturn, TextIO

import attrs

from vouchercore import __version__, csvio
from vouchercore.codes import ALPHANUMERIC
from vouchercore.engine import Engine
from vouchercore.errors import (
    InvalidArgument,
    InvalidPayload,
    NotFound,
    StorageError,
    VoucherError,
)
from vouchercore.simulation import STACKED_SHARE, SimulationError, simulate

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_STORAGE",
    "ProgressBar",
    "main",
]

#: Exit statuses of the store commands (see the module docstring).
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_STORAGE = 4


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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``vouchercore: error: …``."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_BAD_INPUT,
            f"vouchercore: error: {message} (see: {self.prog} --help)\n",
        )


def _voucher_type(text: str) -> str:
    name = text.strip().upper()
    return {"DISCOUNT": "DISCOUNT_VOUCHER", "GIFT": "GIFT_VOUCHER", "LOYALTY": "LOYALTY_CARD"}.get(
        name, name
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _share(text: str) -> float:
    """A share from 0 to 1 (``0``, ``0.25``, ``1``); anything else is refused."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN (and so a word) fails both comparisons
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
            "simulated clock through shared memory. The store must hold no voucher yet. "
            "A share of the carts (--stacked-share) pays with a discount code plus a gift card "
            "in one stacked call; the report counts the stacked redemptions that succeeded, "
            "failed and were rolled back."
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
        "--stacked-share",
        type=_share,
        default=STACKED_SHARE,
        metavar="SHARE",
        help=(
            "the share of the carts, from 0 to 1, that pay with a discount code plus a gift "
            "card in one stacked call (validated with a LOCK first or redeemed at once; "
            f"default {STACKED_SHARE}; 0: none)"
        ),
    )
    sim.add_argument(
        "--store",
        default="memory://",
        help=(
            "store URL: memory:// (default), sqlite:///path.db[?synchronous=NORMAL] or "
            "postgresql://user@host/db?schema=NAME; must hold no voucher yet"
        ),
    )
    _add_store_commands(commands)
    _add_serve_command(commands)
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def _add_serve_command(commands: Any) -> None:
    """``serve``: the Voucherify-compatible HTTP server (the ``http`` extra)."""
    serve = commands.add_parser(
        "serve",
        help="serve a voucher book over Voucherify's HTTP API (needs the http extra)",
        description=(
            "Serve the store over a Voucherify-compatible HTTP API: Voucherify's own SDKs "
            "(PyPI voucherify, npm @voucherify/sdk) run unchanged against it. Every request "
            "must carry the credentials as X-App-Id and X-App-Token; the server does not "
            "start without them (--app-id/--app-token, or VOUCHERCORE_APP_ID/"
            "VOUCHERCORE_APP_TOKEN). SIGTERM or SIGINT stops it cleanly: running requests "
            "finish, running jobs stop, and the store is closed."
        ),
    )
    serve.add_argument(
        "--store",
        default="memory://",
        help=(
            "store URL: memory:// (default; holds nothing between runs), "
            "sqlite:///path.db, postgresql://user@host/db[?schema=NAME]"
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")
    serve.add_argument("--app-id", help="the X-App-Id to accept (or VOUCHERCORE_APP_ID)")
    serve.add_argument("--app-token", help="the X-App-Token to accept (or VOUCHERCORE_APP_TOKEN)")
    serve.add_argument(
        "--threads",
        type=_positive,
        default=8,
        help="engine calls running at once in worker threads on a SQL store (8)",
    )
    serve.add_argument(
        "--jobs-dir",
        help=(
            "where exports and CSV imports are kept (default: a temporary directory); give "
            "server processes that share a store the same one"
        ),
    )


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    """Run the HTTP server until SIGTERM/SIGINT; the engine is closed on the way out."""
    app_id = args.app_id or os.environ.get("VOUCHERCORE_APP_ID")
    app_token = args.app_token or os.environ.get("VOUCHERCORE_APP_TOKEN")
    if not app_id or not app_token:
        return _error(
            "serve needs credentials: --app-id and --app-token, or VOUCHERCORE_APP_ID and "
            "VOUCHERCORE_APP_TOKEN",
            EXIT_BAD_INPUT,
        )
    try:
        import uvicorn  # noqa: PLC0415 - the optional http extra

        from vouchercore.http import create_app  # noqa: PLC0415
    except ImportError as error:
        return _error(
            f"{error} (serve needs the http extra: pip install 'vouchercore[http]')",
            EXIT_BAD_INPUT,
        )
    try:
        engine = Engine(args.store)
    except VoucherError as error:
        return _error(str(error), _status_of(error))
    except ImportError as error:  # the store's optional driver is not installed
        return _error(f"{error} (is the store's extra installed?)", EXIT_BAD_INPUT)
    # the server's own lines (an unexpected error with its request id, the engine closed)
    # go to stderr beside uvicorn's; the credentials are never logged
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    app = create_app(
        engine, app_id=app_id, app_token=app_token, threads=args.threads, jobs_dir=args.jobs_dir
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        log_level="info",
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn catches SIGTERM/SIGINT, shuts down gracefully (the lifespan closes the engine),
    # then raises the signal again for the handler it found: this one, so that a clean stop
    # ends the command with status 0 instead of dying by the signal
    stopped_by: list[int] = []
    previous = {
        number: signal.signal(number, lambda received, _frame: stopped_by.append(received))
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        app.state.vouchercore_close()  # once: a no-op after the lifespan closed it
    if stopped_by:
        print(f"vouchercore: stopped by {signal.Signals(stopped_by[0]).name}", file=sys.stderr)
    return EXIT_OK if server.started else EXIT_REFUSED


def _add_store_commands(commands: Any) -> None:
    """The commands that work on a store: import, generate, voucher, transactions, export,
    release, balance, audit."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--store",
        required=True,
        help=(
            "store URL: sqlite:///path.db[?synchronous=NORMAL], "
            "postgresql://user@host/db[?schema=NAME] (memory:// holds nothing between runs)"
        ),
    )
    common.add_argument("--json", action="store_true", help="print one JSON document")

    imp = commands.add_parser(
        "import",
        parents=[common],
        help="import vouchers from a CSV file (Voucherify's headers)",
        description=(
            "Import standalone vouchers from a CSV file with Voucherify's headers (Code, "
            "Voucher Type, Value, Discount Type, Category, Start Date, Expiration Date, "
            "Redemption Limit, Redeemed Quantity, Redeemed Amount, Active, Additional Info; "
            "other headers become metadata). Good rows are imported, bad rows reported. "
            "Exit 0 when every row was imported, 1 when some were not."
        ),
    )
    imp.add_argument("file", help="the CSV file (UTF-8; '-' for stdin)")

    gen = commands.add_parser(
        "generate",
        parents=[common],
        help="create COUNT vouchers with unique random codes",
        description=(
            "Create COUNT vouchers with unique random codes: LENGTH characters from CHARSET, "
            "or PATTERN with each '#' replaced by one, between PREFIX and POSTFIX. The code "
            "space must hold at least twice COUNT codes."
        ),
    )
    gen.add_argument("count", type=_positive, help="how many vouchers")
    gen.add_argument("--length", type=_positive, default=8, help="random characters (8)")
    gen.add_argument("--charset", default=ALPHANUMERIC, help="characters to draw (0-9A-Za-z)")
    gen.add_argument("--prefix", default="", help="text before the random part")
    gen.add_argument("--postfix", default="", help="text after the random part")
    gen.add_argument("--pattern", help="e.g. 'SPRING-####': each # is a random character")
    gen.add_argument(
        "--type",
        required=True,
        type=_voucher_type,
        choices=("DISCOUNT_VOUCHER", "GIFT_VOUCHER", "LOYALTY_CARD"),
        help="voucher type (also DISCOUNT, GIFT, LOYALTY; any case)",
    )
    gen.add_argument(
        "--amount",
        type=int,
        help="gift credits or loyalty points (minor units), or amount_off / fixed_amount",
    )
    gen.add_argument(
        "--discount-type",
        type=str.upper,
        choices=("AMOUNT", "PERCENT", "FIXED"),
        help="DISCOUNT_VOUCHER: AMOUNT (default, --amount), PERCENT (--percent), FIXED (--amount)",
    )
    gen.add_argument("--percent", help="PERCENT discount: 0 < p ≤ 100, up to 2 decimals")
    gen.add_argument("--amount-limit", type=int, help="PERCENT discount: the largest discount")
    gen.add_argument("--quantity", type=_positive, help="redemption limit (default unlimited)")
    gen.add_argument("--start-date", help="YYYY-MM-DD[THH[:mm[:ss[.SSS]Z]]] (UTC)")
    gen.add_argument("--expiration-date", help="as --start-date; a date alone ends at 23:59:59")
    gen.add_argument("--category")
    gen.add_argument("--campaign-id")
    gen.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    gen.add_argument("--inactive", action="store_true", help="create them disabled")
    gen.add_argument("-o", "--output", help="write every generated code to this file, one per line")

    show = commands.add_parser("voucher", parents=[common], help="show a voucher")
    show.add_argument("code", help="the voucher's code or id")

    txs = commands.add_parser(
        "transactions", parents=[common], help="list a voucher's credit/point transactions"
    )
    txs.add_argument("code")
    txs.add_argument("--limit", type=int, default=10, help="1–100 (10)")
    txs.add_argument("--page", type=int, help="1-based page number")
    txs.add_argument("--starting-after", help="cursor: the last id of the previous page")
    txs.add_argument(
        "--order", default="-id", choices=("-id", "id"), help="-id newest first (default)"
    )

    exp = commands.add_parser(
        "export", parents=[common], help="export a voucher's transactions as CSV or JSON Lines"
    )
    exp.add_argument("code")
    exp.add_argument("-o", "--output", default="-", help="file to write ('-': stdout)")
    exp.add_argument(
        "--fields",
        action="append",
        help=f"columns, comma-separated or repeated (default: {','.join(csvio.EXPORT_FIELDS)})",
    )
    exp.add_argument("--format", default="csv", choices=("csv", "jsonl"))
    exp.add_argument("--order", default="-created_at", choices=("-created_at", "created_at"))

    rel = commands.add_parser(
        "release", parents=[common], help="release the LOCK session KEY holds on a voucher"
    )
    rel.add_argument("code")
    rel.add_argument("key")

    bal = commands.add_parser(
        "balance",
        parents=[common],
        help="add (AMOUNT > 0) or remove (AMOUNT < 0) gift credits or loyalty points",
    )
    bal.add_argument("code")
    bal.add_argument("amount", type=int)
    bal.add_argument("--reason")
    bal.add_argument("--source-id")

    commands.add_parser(
        "audit", parents=[common], help="replay every voucher's log and check the invariants"
    )


def _error(message: str, status: int) -> int:
    print(f"vouchercore: error: {' '.join(message.split())}", file=sys.stderr)
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
            stacked_share=args.stacked_share,
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


# --- the store commands ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """*value* as JSON data: attrs objects as dicts, enums as values, instants as UTC ISO 8601
    with milliseconds (as in the export), decimals as numbers."""
    if attrs.has(type(value)):
        return {
            field.name: _plain(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if not field.name.startswith("_")
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return csvio.format_instant(value)
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _print_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, ensure_ascii=False, indent=2)
    out.write("\n")


def _status_of(error: VoucherError) -> int:
    if isinstance(error, StorageError):
        return EXIT_STORAGE
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, InvalidArgument):
        return EXIT_BAD_INPUT
    return EXIT_REFUSED


@contextlib.contextmanager
def _bar(total: int, label: str) -> Iterator[ProgressBar]:
    """A progress bar on stderr (drawn only on a terminal), its line ended if it drew."""
    bar = ProgressBar(total, label)
    try:
        yield bar
    finally:
        if bar._last:  # it drew something
            bar.close()


def _count_lines(path: str) -> int:
    """Lines in a file (for the import's progress bar): a fast binary scan."""
    count = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _stdin_text() -> TextIO:
    """Standard input decoded as a CSV file is (``import_vouchers_using_csv`` opens a path as
    strict UTF-8 with ``newline=""``): its bytes, never the locale's decoding, which may smuggle
    undecodable bytes in as lone surrogates."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # a text stream standing in for stdin (tests, embedding)
        return sys.stdin
    return io.TextIOWrapper(binary, encoding="utf-8", newline="")


def _import(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    if args.file == "-":
        report = engine.import_vouchers_using_csv(_stdin_text())
    else:
        try:
            lines = _count_lines(args.file) if sys.stderr.isatty() else 0
        except OSError as error:
            raise InvalidPayload(f"cannot read {args.file!r}: {error.strerror}") from None
        with _bar(max(lines - 1, 1), "importing") as bar:
            report = engine.import_vouchers_using_csv(args.file, progress=bar)
    if args.json:
        _print_json(_plain(report), out)
    else:
        print(
            f"imported {report.done_count:,} vouchers, {report.failed_count:,} rows failed",
            file=out,
        )
        for failure in report.failed:
            print(f"  row {failure.row} ({failure.code or '-'}): {failure.reason}", file=out)
    return EXIT_OK if not report.failed_count else EXIT_REFUSED


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidPayload(f"--metadata must be KEY=VALUE, got {pair!r}")
        metadata[key] = value
    return metadata or None


def _template(args: argparse.Namespace) -> dict[str, Any]:
    """The voucher fields of ``generate``'s options, as ``generate_vouchers`` takes them."""
    fields: dict[str, Any] = {"type": args.type}
    amount = args.amount
    if args.type == "DISCOUNT_VOUCHER":
        kind = args.discount_type or "AMOUNT"
        if kind == "PERCENT":
            if args.percent is None:
                raise InvalidPayload("a PERCENT discount needs --percent")
            try:
                percent = Decimal(args.percent)
            except InvalidOperation:
                raise InvalidPayload(f"--percent must be a number, got {args.percent!r}") from None
            discount: dict[str, Any] = {"type": "PERCENT", "percent_off": percent}
            if args.amount_limit is not None:
                discount["amount_limit"] = args.amount_limit
        elif amount is None:
            raise InvalidPayload(f"an {kind} discount needs --amount")
        elif kind == "AMOUNT":
            discount = {"type": "AMOUNT", "amount_off": amount}
        else:
            discount = {"type": "FIXED", "fixed_amount": amount}
        fields["discount"] = discount
    elif args.discount_type or args.percent is not None:
        raise InvalidPayload("--discount-type and --percent apply to DISCOUNT_VOUCHER only")
    elif args.type == "GIFT_VOUCHER":
        fields["gift"] = {"amount": amount or 0}
    else:
        fields["loyalty_card"] = {"points": amount or 0}
    fields["quantity"] = args.quantity
    fields["active"] = not args.inactive
    fields["start_date"] = csvio.parse_instant(
        args.start_date or "", "--start-date", end_of_day=False
    )
    fields["expiration_date"] = csvio.parse_instant(
        args.expiration_date or "", "--expiration-date", end_of_day=True
    )
    fields["category"] = args.category
    fields["campaign_id"] = args.campaign_id
    fields["metadata"] = _metadata(args.metadata)
    return fields


def _generate(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    fields = _template(args)
    with contextlib.ExitStack() as stack:
        on_codes = None
        if args.output is not None:
            try:
                codes_file = stack.enter_context(open(args.output, "w", encoding="utf-8"))
            except OSError as error:
                raise InvalidPayload(f"cannot write {args.output!r}: {error.strerror}") from None

            def on_codes(codes: Sequence[str]) -> None:
                codes_file.write("\n".join(codes) + "\n")

        bar = stack.enter_context(_bar(args.count, "generating"))
        report = engine.generate_vouchers(
            args.count,
            length=args.length,
            charset=args.charset,
            prefix=args.prefix,
            postfix=args.postfix,
            pattern=args.pattern,
            progress=bar,
            on_codes=on_codes,
            **fields,
        )
    if args.json:
        _print_json(_plain(report), out)
    else:
        print(
            f"generated {report.count:,} vouchers ({report.redrawn:,} codes drawn again)", file=out
        )
        shown = report.codes[:10]
        print(
            "first codes: " + ", ".join(shown) + (" …" if report.count > len(shown) else ""),
            file=out,
        )
        if args.output is not None:
            print(f"every code written to {args.output}", file=out)
    return EXIT_OK


def _voucher(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    data = _plain(engine.get_voucher(args.code))
    if args.json:
        _print_json(data, out)
    else:
        for name, value in data.items():
            if value is not None:
                shown = (
                    json.dumps(value, ensure_ascii=False)
                    if isinstance(value, dict | list)
                    else value
                )
                print(f"{name}: {shown}", file=out)
    return EXIT_OK


def _transactions(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    page = engine.list_voucher_transactions(
        args.code,
        limit=args.limit,
        page=args.page,
        starting_after_id=args.starting_after,
        order=args.order,
    )
    if args.json:
        _print_json(_plain(page), out)
        return EXIT_OK
    for tx in page.data:
        print(
            f"{tx.id}  {csvio.format_instant(tx.created_at)}  {tx.type.value:<20} "
            f"{tx.amount:>12}  balance {tx.balance}",
            file=out,
        )
    more = f"; next page: --starting-after {page.more_starting_after}" if page.has_more else ""
    print(f"{len(page.data)} of {page.total} transactions{more}", file=out)
    return EXIT_OK


def _export(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    fields = None
    if args.fields:
        fields = [name.strip() for spec in args.fields for name in spec.split(",") if name.strip()]
    to_stdout = args.output == "-"
    with contextlib.ExitStack() as stack:
        bars: list[ProgressBar] = []

        def total(n: int) -> None:
            if not to_stdout:
                bars.append(stack.enter_context(_bar(n, "exporting")))

        def progress(n: int) -> None:
            if bars:
                bars[0](n)

        try:
            written = engine.export_voucher_transactions(
                args.code,
                out if to_stdout else args.output,
                fields=fields,
                order=args.order,
                format=args.format,
                progress=progress,
                total_out=total,
            )
        except BrokenPipeError:
            raise  # the reader of our output stopped (`| head`): main() ends quietly
        except OSError as error:
            raise InvalidPayload(f"cannot write {args.output!r}: {error.strerror}") from None
    if not to_stdout:
        if args.json:
            _print_json({"written": written, "output": args.output, "format": args.format}, out)
        else:
            print(f"exported {written:,} transactions to {args.output}", file=out)
    return EXIT_OK


def _release(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    engine.release_validation_session(args.code, args.key)
    if args.json:
        _print_json({"released": True, "code": args.code, "key": args.key}, out)
    else:
        print(f"released session {args.key!r} on {args.code!r}", file=out)
    return EXIT_OK


def _balance(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    update = engine.update_voucher_balance(
        args.code, args.amount, reason=args.reason, source_id=args.source_id
    )
    if args.json:
        _print_json(_plain(update), out)
    else:
        print(
            f"{'added' if update.amount > 0 else 'removed'} {abs(update.amount)}: "
            f"balance {update.balance} of {update.total} ({update.transaction_id})",
            file=out,
        )
    return EXIT_OK


def _audit(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    report = engine.audit()
    if args.json:
        _print_json({**_plain(report), "ok": report.ok}, out)
    else:
        print(str(report), file=out)
    return EXIT_OK if report.ok else EXIT_REFUSED


_STORE_COMMANDS: dict[str, Callable[[Engine, argparse.Namespace, TextIO], int]] = {
    "import": _import,
    "generate": _generate,
    "voucher": _voucher,
    "transactions": _transactions,
    "export": _export,
    "release": _release,
    "balance": _balance,
    "audit": _audit,
}


def _on_store(args: argparse.Namespace, out: TextIO) -> int:
    """Open the store, run the command, map what went wrong to one line and an exit status."""
    try:
        with Engine(args.store) as engine:
            return _STORE_COMMANDS[args.command](engine, args, out)
    except VoucherError as error:
        if args.json:
            _print_json({"error": error.as_dict()}, out)
        return _error(str(error), _status_of(error))
    except ImportError as error:  # the store's optional driver is not installed
        return _error(f"{error} (is the store's extra installed?)", EXIT_BAD_INPUT)
    except BrokenPipeError:
        raise  # the reader of our output stopped (`| head`): main() ends quietly
    except OSError as error:
        return _error(str(error), EXIT_BAD_INPUT)
    except (ValueError, OverflowError, RecursionError, UnicodeError) as error:
        # never expected (every bad input is a VoucherError): one line rather than a traceback
        return _error(f"unexpected {type(error).__name__}: {error}", EXIT_REFUSED)


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "simulate": _simulate,
    "serve": _serve,
    **dict.fromkeys(_STORE_COMMANDS, _on_store),
}


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
