"""Exports and async actions: work the server answers at once and finishes later.

``POST /v1/vouchers/{code}/transactions/export`` answers with an export object (``SCHEDULED``)
and ``POST /v1/vouchers/importCSV`` with ``202 {async_action_id}``; the work then runs on a
small pool of worker threads (:class:`Jobs`), calling the engine's own verbs
(``export_voucher_transactions``, ``import_vouchers_using_csv``). Clients poll
``GET /v1/exports/{id}`` and ``GET /v1/async-actions/{id}``, and download the file from the
export's ``result.url``.

Each export and async action is a JSON record in the jobs directory (``exp_….json``,
``aa_….json``, rewritten whole with an atomic rename), the export file beside it
(``exp_….csv``). Server processes given the same directory see each other's records, so a
client may poll any of them. Records older than the retention (a day by default) are swept
when a new one is made. At shutdown the running work is stopped at its next progress report
(an import keeps the batches it stored; its record says so) and the pool is joined before
the engine is closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from vouchercore.csvio import format_instant
from vouchercore.errors import StorageError, VoucherError

if TYPE_CHECKING:
    from vouchercore.engine import Engine

__all__ = [
    "FAILED_ROWS_KEPT",
    "Jobs",
    "Stopped",
    "new_export",
    "new_import",
    "public",
    "run_export",
    "run_import",
]

_LOG: Final = logging.getLogger("vouchercore.http")

_ID_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID: Final = re.compile(r"(exp|aa)_[0-9a-zA-Z]{24}")
#: How many failed rows an import's record lists (``failed_count`` counts them all).
FAILED_ROWS_KEPT: Final = 1_000
_DAY_SECONDS: Final = 86_400.0


class Stopped(Exception):
    """Raised from a progress report to stop a job: the server is shutting down."""


class Jobs:
    """The export and async-action records of one server, and the threads that do the work.

    Args:
        directory: where the records and files live (shared by processes given the same
            one); None makes a private temporary directory, removed by :meth:`close`.
        workers: how many jobs run at once (more wait in line).
        retention_seconds: how long a record and its file are kept.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        workers: int = 2,
        retention_seconds: float = _DAY_SECONDS,
    ) -> None:
        self._owned = directory is None
        self.directory = Path(
            tempfile.mkdtemp(prefix="vouchercore-http-") if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._retention = retention_seconds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vouchercore-job")
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    # --- records ----------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        """A fresh record id: *prefix* (``exp_``, ``aa_``) and 24 random alphanumerics."""
        return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))

    def path(self, record_id: str, suffix: str) -> Path | None:
        """The file of *record_id* with *suffix* (``.json``, ``.csv``), or None for a text
        that is not a record id (never a path outside the directory)."""
        if _ID.fullmatch(record_id) is None:
            return None
        return self.directory / f"{record_id}{suffix}"

    def save(self, record: dict[str, Any]) -> None:
        """Write *record* (its ``id`` names the file) atomically."""
        target = self.path(record["id"], ".json")
        assert target is not None
        with self._lock:
            partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            partial.write_text(json.dumps(record), encoding="utf-8")
            os.replace(partial, target)

    def load(self, record_id: str) -> dict[str, Any] | None:
        """The record *record_id*, or None when there is none."""
        target = self.path(record_id, ".json")
        if target is None:
            return None
        try:
            loaded: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return loaded

    def remove(self, record_id: str) -> bool:
        """Remove the record *record_id* and its file; False when there is none."""
        target = self.path(record_id, ".json")
        if target is None or not target.exists():
            return False
        for suffix in (".csv", ".json"):
            with contextlib.suppress(FileNotFoundError):
                target.with_suffix(suffix).unlink()
        return True

    def sweep(self) -> None:
        """Remove the records and files older than the retention."""
        horizon = time.time() - self._retention
        for entry in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < horizon:
                    entry.unlink()

    def keep_upload(self, source: IO[bytes], record_id: str) -> Path:
        """Copy an uploaded file next to *record_id*'s record (``….upload``), for a job to
        read after the request is over."""
        target = self.path(record_id, ".upload")
        assert target is not None
        with open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        return target

    # --- work -------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`close` began: jobs stop at their next progress report."""
        return self._stopping.is_set()

    def check(self) -> None:
        """Raise :class:`Stopped` when the server is shutting down (called from progress
        reports)."""
        if self._stopping.is_set():
            raise Stopped("the server shut down")

    def submit(self, work: Callable[[], None]) -> None:
        """Run *work* on a worker thread (it records its own outcome)."""
        self._pool.submit(work)

    def close(self) -> None:
        """Stop the running jobs at their next progress report (the waiting ones stop before
        they start, each recording why), wait for them, and remove the directory if this
        object made it."""
        self._stopping.set()
        self._pool.shutdown(wait=True)
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as clients see it: without the server's own fields (``_token`` …)."""
    return {name: value for name, value in record.items() if not name.startswith("_")}


# --- exports ------------------------------------------------------------------------------------


def new_export(
    jobs: Jobs, engine: Engine, voucher_id: str, order: str, columns: tuple[str, ...]
) -> dict[str, Any]:
    """The record of a new voucher-transactions export (``SCHEDULED``), saved.

    Its ``parameters.filters`` name the voucher as ``{"voucher_id": {"conditions": {"$is":
    [id]}}}``. The export-create schema declares only ``$in``, with items of one character
    (which the Python SDK 6.1.1 enforces: no real voucher id fits); the export-get schema's
    filter conditions (``FiltersCondition``) make every operator, ``$is`` included, a list.
    ``$is`` with the one id is valid under both schemas and accepted by the SDK.
    """
    jobs.sweep()
    record: dict[str, Any] = {
        "id": jobs.new_id("exp_"),
        "object": "export",
        "created_at": format_instant(engine.clock.now()),
        "status": "SCHEDULED",
        "channel": "API",
        "exported_object": "voucher_transactions",
        "parameters": {
            "order": order,
            "fields": list(columns),
            "filters": {"voucher_id": {"conditions": {"$is": [voucher_id]}}},
        },
        "result": None,
        "user_id": None,
        "_token": secrets.token_urlsafe(24),
        "_voucher_id": voucher_id,
    }
    jobs.save(record)
    return record


def run_export(jobs: Jobs, engine: Engine, record: dict[str, Any], url: str) -> None:
    """Write the export's file, then record it ``DONE`` with ``result.url`` = *url* (or
    ``ERROR`` with the reason). Runs on a job thread."""
    target = jobs.path(record["id"], ".csv")
    assert target is not None
    parameters = record["parameters"]

    def progress(_written: int) -> None:
        jobs.check()

    try:
        jobs.check()
        record["status"] = "IN_PROGRESS"
        jobs.save(record)
        engine.export_voucher_transactions(
            record["_voucher_id"],
            target,
            fields=parameters["fields"],
            order=parameters["order"],
            progress=progress,
        )
    except Exception as problem:  # recorded for the client: the job thread has no caller
        with contextlib.suppress(OSError):
            target.unlink()
        record["status"] = "ERROR"
        record["_error"] = _reason(problem)
        _LOG.warning("export %s failed: %s", record["id"], record["_error"])
    else:
        record["status"] = "DONE"
        record["result"] = {"url": url}
    jobs.save(record)


# --- async actions ------------------------------------------------------------------------------


def new_import(jobs: Jobs, engine: Engine, request_id: str) -> dict[str, Any]:
    """The record of a new CSV import (``VOUCHERS.IMPORT_CSV``, ``ENQUEUED``), saved."""
    jobs.sweep()
    now = format_instant(engine.clock.now())
    record: dict[str, Any] = {
        "id": jobs.new_id("aa_"),
        "type": "VOUCHERS.IMPORT_CSV",
        "status": "ENQUEUED",
        "operation_status": None,
        "created_at": now,
        "updated_at": now,
        "request_id": request_id,
        "processing_time": None,
        "progress": 0,
        "object": "async_action",
        "result": None,
    }
    jobs.save(record)
    return record


def run_import(jobs: Jobs, engine: Engine, record: dict[str, Any], upload: Path) -> None:
    """Import the uploaded CSV file with ``Engine.import_vouchers_using_csv``, recording
    progress (rows read of the file's lines) and then the outcome: ``DONE`` with
    ``done_count``, ``failed_count`` and each failed row (code, row, reason), or ``FAILED``
    when the file as a whole could not be imported. Runs on a job thread."""
    started = time.monotonic()
    try:
        jobs.check()
        lines = max(_count_lines(upload), 1)
        record["status"] = "IN_PROGRESS"
        jobs.save(record)

        def progress(rows: int) -> None:
            jobs.check()
            record["progress"] = min(99, rows * 100 // lines)
            record["updated_at"] = format_instant(engine.clock.now())
            jobs.save(record)

        with open(upload, encoding="utf-8", newline="") as text:
            report = engine.import_vouchers_using_csv(text, progress=progress)
    except Exception as problem:  # recorded for the client: the job thread has no caller
        record["status"] = "FAILED"
        record["operation_status"] = "FAILED"
        record["result"] = {
            "message": _reason(problem),
            "failed": [],
            "done_count": None,
            "failed_count": None,
        }
        _LOG.warning("import %s failed: %s", record["id"], record["result"]["message"])
    else:
        failed = [
            {"code": row.code, "row": row.row, "reason": row.reason}
            for row in report.failed[:FAILED_ROWS_KEPT]
        ]
        shown = (
            ""
            if report.failed_count <= FAILED_ROWS_KEPT
            else (f"; the first {FAILED_ROWS_KEPT:,} failed rows are listed")
        )
        record["status"] = "DONE"
        record["operation_status"] = "SUCCESS" if report.failed_count == 0 else "FAILED"
        record["progress"] = 100
        record["result"] = {
            "message": (
                f"{report.done_count:,} vouchers imported, {report.failed_count:,} rows failed"
                f"{shown}"
            ),
            "failed": failed,
            "done_count": report.done_count,
            "failed_count": report.failed_count,
        }
    finally:
        with contextlib.suppress(OSError):
            upload.unlink()
    record["processing_time"] = int((time.monotonic() - started) * 1000)
    record["updated_at"] = format_instant(engine.clock.now())
    jobs.save(record)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as data:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 20), b""))


def _reason(problem: Exception) -> str:
    """What went wrong, for a client: a library error's message, or a plain sentence for
    anything else (never a driver's text: that, and an unexpected error's traceback, go to
    the log)."""
    if isinstance(problem, StorageError):
        _LOG.error("job failed: %s", problem)
        return "the store failed (the server log has the details)"
    if isinstance(problem, VoucherError):
        return problem.message
    if isinstance(problem, Stopped):
        return "stopped: the server shut down (the vouchers stored before are kept)"
    if isinstance(problem, UnicodeDecodeError):
        return "the file is not UTF-8 text (the vouchers stored before are kept)"
    _LOG.error("job failed unexpectedly", exc_info=(type(problem), problem, problem.__traceback__))
    return "an unexpected error stopped the job (the server log has the details)"
