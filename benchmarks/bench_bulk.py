"""Bulk benchmark: CSV import, code generation and transaction export at scale.

Run: ``python benchmarks/bench_bulk.py`` (``--quick`` for a smoke run of small sizes,
``--sizes 100000 1000000`` to choose, ``--dir`` for where the files go). Prints figures;
asserts nothing. Every job runs in a fresh Python process, so its peak RSS (``ru_maxrss``
of that process, read when the job ends) is the job's own: the interpreter and vouchercore
(~30 MB) plus what the job needed. Sizes are run side by side to show whether peak memory
grows with the row count.

Jobs, each at every size N:

* ``import-memory`` — ``import_vouchers_using_csv`` of an N-row file (four row shapes: gift
  cards, loyalty cards, AMOUNT and PERCENT discounts, with category, expiration date and limit)
  into the in-memory store (its RSS holds the N vouchers: see bytes per voucher);
* ``import-sqlite`` — the same file into a new SQLite file (``synchronous=FULL``, the default);
* ``generate-sqlite`` — ``generate_vouchers(N)`` of 10-character codes into a new SQLite file;
* ``export-sqlite`` — ``export_voucher_transactions`` of one gift card with N transactions
  (written beforehand, in another process, straight into the file) as CSV to /dev/null, and
  beside it the floor: the same rows fetched with ``SELECT *`` and written by
  ``csv.writer.writerows`` with no formatting at all;

and ``bytes/voucher``: the memory store's growth per voucher over 200,000 imported vouchers
(tracemalloc: Python's allocations, without allocator slack) and the RSS delta per voucher.

The CSV files are written by this process before the jobs start (not timed). Figures on a
shared machine are noisy: run it on a quiet one for numbers to compare.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

from vouchercore import Engine
from vouchercore.stores import _sql

HEADER = "Code,Voucher Type,Value,Discount Type,Category,Expiration Date,Redemption Limit\n"
SHAPES = (
    "GIFT_VOUCHER,5000,,gift,2027-12-31,",
    "DISCOUNT_VOUCHER,12.5,PERCENT,spring,2027-06-30T12:00,1",
    "DISCOUNT_VOUCHER,500,AMOUNT,,,5",
    "LOYALTY_CARD,100,,members,,",
)


def write_csv(path: str, rows: int) -> None:
    """An import file of *rows* rows cycling through :data:`SHAPES`."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for start in range(0, rows, 10_000):
            out.write(
                "".join(
                    f"BULK{i:09d},{SHAPES[i % len(SHAPES)]}\n"
                    for i in range(start, min(start + 10_000, rows))
                )
            )


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- jobs (each in its own process) ------------------------------------------------------------


def job_import(store: str, csv_path: str) -> dict[str, Any]:
    with Engine(store) as engine:
        started = time.perf_counter()
        report = engine.import_vouchers_using_csv(csv_path)
        seconds = time.perf_counter() - started
    assert report.failed_count == 0, report.failed[:3]
    return {"rows": report.done_count, "seconds": seconds}


def job_generate(store: str, rows: int) -> dict[str, Any]:
    with Engine(store) as engine:
        started = time.perf_counter()
        report = engine.generate_vouchers(rows, length=10, gift={"amount": 2_500})
        seconds = time.perf_counter() - started
    return {"rows": report.count, "seconds": seconds, "redrawn": report.redrawn}


def prepare_export(path: str, rows: int) -> None:
    """A gift card with *rows* CREDITS_REDEMPTION transactions, written straight into the
    file (the engine would take minutes to make them one redemption at a time)."""
    with Engine(f"sqlite:///{path}") as engine:
        card = engine.create_voucher("CARD", gift={"amount": 10**15})
    columns = ", ".join(_sql.TRANSACTION_COLUMNS)
    marks = ", ".join("?" * len(_sql.TRANSACTION_COLUMNS))
    conn = sqlite3.connect(path)
    created = 1_767_225_600_000_000  # 2026-01-01
    conn.executemany(
        f"INSERT INTO transactions ({columns}) VALUES ({marks})",
        (
            (
                seq,
                card.id,
                "CREDITS_REDEMPTION",
                -5,
                10**15 - 5 * seq,
                created + seq * 1_000_000,
                None,
                None,
                None,
                None,
                f'["redemption","r_{seq:032d}","order","order-{seq}"]',
            )
            for seq in range(1, rows + 1)
        ),
    )
    conn.commit()
    conn.close()


def job_export(path: str) -> dict[str, Any]:
    with Engine(f"sqlite:///{path}") as engine, open(os.devnull, "w", newline="") as out:
        started = time.perf_counter()
        written = engine.export_voucher_transactions("CARD", out)
        seconds = time.perf_counter() - started
    return {"rows": written, "seconds": seconds}


def job_export_floor(path: str) -> dict[str, Any]:
    """The floor under the export: the same rows read with ``SELECT *`` in chunks and written
    by ``csv.writer.writerows`` with no formatting at all (what Python cannot go below)."""
    conn = sqlite3.connect(path)
    with open(os.devnull, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        started = time.perf_counter()
        cursor = conn.execute("SELECT * FROM transactions ORDER BY seq DESC")
        rows = 0
        while chunk := cursor.fetchmany(5_000):
            writer.writerows(chunk)
            rows += len(chunk)
        seconds = time.perf_counter() - started
    conn.close()
    return {"rows": rows, "seconds": seconds}


def job_bytes_per_voucher(csv_path: str, rows: int) -> dict[str, Any]:
    engine = Engine()
    text = open(csv_path, encoding="utf-8").read()  # noqa: SIM115 — read whole: not measured
    rss_before = _rss_now_mb()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    report = engine.import_vouchers_using_csv(io.StringIO(text))
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del text
    rss_after = _rss_now_mb()
    assert report.done_count == rows
    return {
        "rows": rows,
        "traced_bytes_per_voucher": (current - base) / rows,
        "rss_bytes_per_voucher": (rss_after - rss_before) * 1024 * 1024 / rows,
    }


def _rss_now_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_job(argv: list[str]) -> None:
    """Child process: run one job and print its figures as one JSON line."""
    name, *args = argv
    if name == "import":
        result = job_import(args[0], args[1])
    elif name == "generate":
        result = job_generate(args[0], int(args[1]))
    elif name == "prepare-export":
        prepare_export(args[0], int(args[1]))
        result = {}
    elif name == "export":
        result = job_export(args[0])
    elif name == "export-floor":
        result = job_export_floor(args[0])
    elif name == "bytes":
        result = job_bytes_per_voucher(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown job {name!r}")
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


# --- the parent ----------------------------------------------------------------------------------


def spawn(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--job", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"job {args[0]} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def show(label: str, rows: int, result: dict[str, Any]) -> None:
    rate = result["rows"] / result["seconds"]
    print(
        f"  {label:<18} {rows:>10,} rows  {result['seconds']:>7.2f} s  {rate:>10,.0f} rows/s  "
        f"peak RSS {result['peak_rss_mb']:>6.0f} MB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", help="row counts (100000 1000000)")
    parser.add_argument("--dir", help="where the CSV and database files go (removed after)")
    parser.add_argument("--job", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        run_job(args.job)
        return
    sizes = args.sizes or ([2_000, 20_000] if args.quick else [100_000, 1_000_000])
    per_voucher_rows = 20_000 if args.quick else 200_000
    work = tempfile.mkdtemp(prefix="bench_bulk_", dir=args.dir)
    print(f"bench_bulk: sizes {', '.join(f'{n:,}' for n in sizes)}; files in {work}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    try:
        for rows in sizes:
            csv_path = os.path.join(work, f"import-{rows}.csv")
            write_csv(csv_path, rows)
            print(f"N = {rows:,} (CSV file {os.path.getsize(csv_path) / 1e6:,.0f} MB)")
            show("import memory", rows, spawn("import", "memory://", csv_path))
            db = os.path.join(work, f"import-{rows}.db")
            show("import sqlite", rows, spawn("import", f"sqlite:///{db}", csv_path))
            os.remove(csv_path)
            db = os.path.join(work, f"generate-{rows}.db")
            show("generate sqlite", rows, spawn("generate", f"sqlite:///{db}", str(rows)))
            db = os.path.join(work, f"export-{rows}.db")
            spawn("prepare-export", db, str(rows))
            show("export sqlite", rows, spawn("export", db))
            show("  raw SQL+csv floor", rows, spawn("export-floor", db))
            for name in os.listdir(work):
                if name.endswith((".db", ".db-wal", ".db-shm")):
                    os.remove(os.path.join(work, name))
        csv_path = os.path.join(work, "per-voucher.csv")
        write_csv(csv_path, per_voucher_rows)
        measured = spawn("bytes", csv_path, str(per_voucher_rows))
        print(
            f"memory store, {per_voucher_rows:,} imported vouchers: "
            f"{measured['traced_bytes_per_voucher']:,.0f} bytes/voucher (tracemalloc), "
            f"{measured['rss_bytes_per_voucher']:,.0f} bytes/voucher (RSS delta)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
