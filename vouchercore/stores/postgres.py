"""The PostgreSQL store: a voucher book shared by every thread, process and host that reaches the
database.

**One database transaction per operation.** A unit of work is a transaction (``READ
COMMITTED``) that begins by locking the voucher's row (``SELECT … FOR UPDATE``): two operations on
one voucher run one after the other, operations on different vouchers never wait for each other.
The voucher's sessions are read by a *separate* statement after the lock is granted — under READ
COMMITTED each statement takes a fresh snapshot, so it sees what the previous holder of the lock
committed (a subquery of the locking statement would read the snapshot taken *before* waiting).

**Round trips** (psycopg pipeline mode: statements are sent together and answered together):

* open a unit — 1: ``BEGIN`` + lock the voucher + read its sessions; on several vouchers (a
  stacked redemption, a transfer) — 1 as well: one statement locks them all, in id order, one
  reads their sessions;
* commit — 1: every ``UPDATE``/``DELETE``/``INSERT`` + ``COMMIT``; abort, or a commit with
  nothing to write (a read) — 1: ``COMMIT`` of a transaction that wrote nothing, without waiting
  for the WAL flush its row lock would otherwise cost (and not ``ROLLBACK``, after which psycopg
  would drop the connection's prepared statements);
* each transaction the domain creates — 1 more: its id is ``nextval`` of a ``SEQUENCE``;
* a voucher insert — 1 (one autocommitted ``INSERT``); a read — 1 (one statement).

So a redemption costs 2 round trips, 3 when it writes a transaction (a gift card's credits);
a stacked one 2 + one per transaction it writes, whatever the number of vouchers.

**Transaction ids** are ``vtx_`` + 18 hex digits of the schema's ``transaction_seq`` sequence,
taken only when the domain creates a transaction (so a memory, SQLite and PostgreSQL store driven
in lockstep hand out the same ids). A sequence never serialises anything: ``nextval`` does not
wait for other transactions (a counter row would make every voucher wait for every other). Ids
increase strictly in the order they are taken; a transaction that rolls back leaves a gap (as in
the memory store), and two vouchers' transactions may become visible out of id order — one
voucher's never do, as its units run one at a time.

**Failures.** Opening a unit (and inserting a voucher, and a read) is retried, with exponential
backoff, on a serialization failure or deadlock (SQLSTATE ``40001``/``40P01``), and at once on a
pooled connection found dead (the pool's other idle connections are checked first). A failure
in :meth:`PostgresStore.commit` — after the domain has decided — rolls back and raises
:class:`~vouchercore.errors.StorageError`: nothing of the operation is stored, and the caller may
retry it. (If the connection is lost while ``COMMIT`` is in flight, the database alone knows
whether it committed: a transaction either committed wholly or not at all.) A database that
cannot be reached is a ``StorageError`` naming its address (host, port, database), never its
password; pooled connections that broke are discarded and replaced, so the store works again
once the database is back.

**Schema.** Every table lives in one PostgreSQL schema (``public`` unless told), created with it
on first open inside a transaction holding an advisory lock, so two processes opening a new
database at once do not both create it. ``vouchercore_meta`` holds the schema version; a newer
version, or a schema holding other tables and no vouchercore schema, is refused. Instants are
``timestamptz`` (the domain's integer microseconds are converted at this boundary); free JSON
(discount, metadata, details) is ``json``, kept as written. The tables, their constraints and
indexes, and the migrations are rendered from the one specification in
:mod:`vouchercore.stores._schema`. ``CHECK`` constraints back the domain
— counters and balances never below zero, redeemed quantity never above the limit — and codes
are ``UNIQUE``. Text keys sort byte-wise (``COLLATE "C"``), as in SQLite.

**Connections** come from :mod:`vouchercore.stores._pgconn` (:class:`Connections`). Given a
conninfo string or URL the store opens its own :class:`psycopg_pool.ConnectionPool` (autocommit
connections, ``TimeZone`` UTC) and closes it in :meth:`PostgresStore.close`. Given a pool or a
:class:`psycopg.Connection` it uses it and never closes it; a single connection serves one unit at
a time (others wait for it, up to *timeout*). A unit holds its connection until commit or abort,
and reads made by the thread holding an open unit run on that connection (they see the unit's
voucher as locked, and never wait for a second connection from an exhausted pool). A forked
child never touches its parent's connections: it opens a pool of its own on first use (a store
on a single connection cannot cross ``fork``).

Complexity: a unit reads the voucher by a unique index and its sessions by the primary key
prefix, O(log n + s); :meth:`PostgresStore.expiring_sessions` walks the expiry index.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Final, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from vouchercore.domain.idempotency import KeyRecord
from vouchercore.domain.instants import from_us, to_us
from vouchercore.domain.records import SessionRecord, TransactionRecord, VoucherRecord, VoucherState
from vouchercore.domain.snapshots import ParentRedemption, Redemption
from vouchercore.errors import DuplicateFound, InvalidPayload, StorageError
from vouchercore.ports import SessionCounts, Store, distinct_units
from vouchercore.stores import _schema, _sql
from vouchercore.stores._pgconn import (
    NEVER,
    NO_FLUSH,
    OPTION_RANGES,
    STORE_OPTIONS,
    Conn,
    Connections,
    Lease,
    number_option,
    parse_postgres_url,
)
from vouchercore.stores._sql import (
    COUNTER_COLUMNS,
    DETACHED_SESSION,
    KEY_COLUMNS,
    KEYS,
    PARENT_COLUMNS,
    PARENTS,
    REDEMPTION_COLUMNS,
    REDEMPTIONS,
    ROLLBACK_COLUMNS,
    ROLLBACKS,
    SCHEMA_VERSION,
    SESSION_COLUMNS,
    SESSIONS,
    TRANSACTION_COLUMNS,
    TRANSACTIONS,
    VOUCHER_COLUMNS,
    VOUCHER_MUTABLE,
    VOUCHER_MUTABLE_COLUMNS,
    VOUCHERS,
    Changes,
    SqlUnit,
)

__all__ = ["STORE_OPTIONS", "PostgresStore", "parse_postgres_url"]

_DELETED: Final = int(VoucherState.DELETED)
#: Columns holding free JSON: ``json`` in the database, text in rows (kept exactly as written).
_JSON_COLUMNS: Final = frozenset(
    column.name for table in _schema.TABLES for column in table.columns if column.type == "json"
)
#: the names the unit-of-work methods use
T = TypeVar("T")


# --- SQL -------------------------------------------------------------------------------------


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _select_list(columns: Sequence[str], prefix: str = "") -> str:
    """Columns to select, JSON ones as their text (kept exactly as written)."""
    return ", ".join(
        f"{prefix}{c}::text" if c in _JSON_COLUMNS else f"{prefix}{c}" for c in columns
    )


def _insert(table: str, columns: Sequence[str]) -> str:
    values = ", ".join("%s::json" if c in _JSON_COLUMNS else "%s" for c in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"


class _Statements:
    """Every statement the store runs, qualified with its schema."""

    def __init__(self, schema: str) -> None:
        s = _quote_ident(schema)
        v = _select_list(VOUCHER_COLUMNS)
        r = _select_list(REDEMPTION_COLUMNS)
        self.dialect = _schema.Dialect.postgresql(s)
        self.ddl = _schema.create_statements(self.dialect)
        self.version = f"SELECT value FROM {s}.vouchercore_meta WHERE name = 'schema_version'"
        # code first, else id: one statement, locking only the row it returns
        self.lock_voucher = (
            f"SELECT {v} FROM {s}.vouchers WHERE code = %s OR id = %s "
            "ORDER BY code = %s DESC LIMIT 1 FOR UPDATE"
        )
        # run after the lock is granted (its own snapshot); names the voucher it resolved, so
        # a voucher created meanwhile under the code that resolved by id is noticed. Sessions
        # load in key order (byte-wise), as from SQLite's primary key.
        sessions = ", ".join("v.id" if c == "voucher_id" else f"s.{c}" for c in SESSION_COLUMNS)
        self.sessions_of = (
            f"SELECT {sessions} FROM (SELECT id FROM {s}.vouchers "
            "WHERE code = %s OR id = %s ORDER BY code = %s DESC LIMIT 1) AS v "
            f"LEFT JOIN {s}.sessions AS s ON s.voucher_id = v.id ORDER BY s.key"
        )
        # several vouchers (begin_many): the statements for n names, made on first use
        self._schema = s
        self._vouchers = _select_list(VOUCHER_COLUMNS, "v.")
        self._sessions = sessions
        self._many: dict[int, tuple[str, str]] = {}
        self.sessions_by_ids = (
            f"SELECT {', '.join(SESSION_COLUMNS)} FROM {s}.sessions "
            "WHERE voucher_id = ANY(%s::text[]) ORDER BY voucher_id, key"
        )
        self.points_due = (
            f"SELECT id FROM {s}.vouchers WHERE points_due_at IS NOT NULL "
            "AND points_due_at <= %s ORDER BY points_due_at, id LIMIT %s"
        )
        self.sessions_by_id = (
            f"SELECT {', '.join(SESSION_COLUMNS)} FROM {s}.sessions WHERE voucher_id = %s "
            "ORDER BY key"
        )
        of_redemption = f"(SELECT voucher_id FROM {s}.redemptions WHERE id = %s)"
        self.lock_voucher_of_redemption = (
            f"SELECT {v} FROM {s}.vouchers WHERE id = {of_redemption} FOR UPDATE"
        )
        self.sessions_of_redemption = (
            f"SELECT {', '.join(SESSION_COLUMNS)} FROM {s}.sessions "
            f"WHERE voucher_id = {of_redemption} ORDER BY key"
        )
        self.redemption = f"SELECT {r} FROM {s}.redemptions WHERE id = %s"
        self.update_voucher = (
            f"UPDATE {s}.vouchers SET {', '.join(f'{c} = %s' for c in VOUCHER_MUTABLE_COLUMNS)} "
            "WHERE id = %s"
        )
        self.insert_voucher = _insert(f"{s}.vouchers", VOUCHER_COLUMNS)
        self.voucher_exists = f"SELECT 1 FROM {s}.vouchers WHERE id = %s"
        self.insert_session = _insert(f"{s}.sessions", SESSION_COLUMNS)
        self.delete_session = f"DELETE FROM {s}.sessions WHERE voucher_id = %s AND key = %s"
        self.insert_transaction = _insert(f"{s}.transactions", TRANSACTION_COLUMNS)
        self.insert_redemption = _insert(f"{s}.redemptions", REDEMPTION_COLUMNS)
        self.update_redemption = (
            f"UPDATE {s}.redemptions SET status = %s, rollback_id = %s WHERE id = %s"
        )
        self.insert_rollback = _insert(f"{s}.rollbacks", ROLLBACK_COLUMNS)
        sequence = f"{s}.transaction_seq".replace("'", "''")
        self.next_transaction = f"SELECT nextval('{sequence}')"
        self.purge = (
            *(
                f"DELETE FROM {s}.{table} WHERE voucher_id = %s"
                for table in ("sessions", "transactions", "redemptions", "rollbacks")
            ),
            f"DELETE FROM {s}.vouchers WHERE id = %s",
        )
        self.transactions = (
            f"SELECT {_select_list(TRANSACTION_COLUMNS)} FROM {s}.transactions "
            "WHERE voucher_id = %s ORDER BY seq"
        )
        self.redemptions = f"SELECT {r} FROM {s}.redemptions WHERE voucher_id = %s ORDER BY seq"
        detached = ", ".join("v.code" if c == "code" else f"s.{c}" for c in DETACHED_SESSION.names)
        self.expiring = (
            f"SELECT {detached} "
            f"FROM {s}.sessions AS s JOIN {s}.vouchers AS v ON v.id = s.voucher_id "
            "WHERE s.expires_at <= %s ORDER BY s.expires_at, s.voucher_id, s.key LIMIT %s"
        )
        self.codes = (
            f"SELECT code FROM {s}.vouchers WHERE state < %s AND code > %s ORDER BY code LIMIT %s"
        )
        sums = ", ".join(f"COALESCE(SUM({c}), 0)::bigint" for c in COUNTER_COLUMNS)
        self.session_counts = (
            f"SELECT {sums}, (SELECT COUNT(*) FROM {s}.sessions) FROM {s}.vouchers"
        )
        self.session_count = f"SELECT COUNT(*) FROM {s}.sessions"
        keys = f"{s}.idempotency_keys"
        # a claim inserts a placeholder row: a concurrent claim of the key waits on the
        # primary key until this transaction ends (then finds the record, or claims anew)
        self.claim_key = (
            f"INSERT INTO {keys} ({', '.join(KEY_COLUMNS)}) "
            "VALUES (%s, '', '', 'epoch', 'epoch') ON CONFLICT (key) DO NOTHING RETURNING key"
        )
        self.lock_key = f"SELECT {_select_list(KEY_COLUMNS)} FROM {keys} WHERE key = %s FOR UPDATE"
        self.upsert_key = (
            f"{_insert(keys, KEY_COLUMNS)} ON CONFLICT (key) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in KEY_COLUMNS if c != "key")
        )
        self.delete_key = f"DELETE FROM {keys} WHERE key = %s"
        parents = f"{s}.parent_redemptions"
        self.insert_parent = _insert(parents, PARENT_COLUMNS)
        self.update_parent = f"UPDATE {parents} SET status = %s, body = %s WHERE id = %s"
        self.parent = f"SELECT {_select_list(PARENT_COLUMNS)} FROM {parents} WHERE id = %s"
        self.parents_page = (
            f"SELECT {_select_list(PARENT_COLUMNS)} FROM {parents} WHERE id > %s "
            "ORDER BY id LIMIT %s"
        )
        self.expire_keys = f"DELETE FROM {keys} WHERE expires_at <= %s"

    def many(self, count: int) -> tuple[str, str]:
        """begin_many's two statements for *count* names (``%s`` each, in order): lock the
        vouchers, then read their sessions.

        Each name is resolved as :attr:`lock_voucher` resolves it (code first, else id), one
        row per name with its position (1-based). The names are a ``VALUES`` list of *count*
        parameters, not an array: the planner then knows the row count in the generic plan of
        the prepared statement as well as in a custom one, and keeps the generic plan (an
        ``unnest`` of an array parameter is estimated at 10 rows in a generic plan, so
        PostgreSQL would plan every execution anew — most of the statement's time).
        """
        made = self._many.get(count)
        if made is not None:
            return made
        names = ", ".join(f"({i}, %s::text)" for i in range(1, count + 1))
        resolved = (
            f"(VALUES {names}) AS c(pos, name) CROSS JOIN LATERAL "
            f"(SELECT id FROM {self._schema}.vouchers WHERE code = c.name OR id = c.name "
            "ORDER BY code = c.name DESC LIMIT 1) AS r"
        )
        # The rows are locked in id order, one statement for all. PostgreSQL's SELECT reference
        # ("The Locking Clause") says ORDER BY is applied first: the command sorts the result,
        # then locks the rows (it may block on one, and may then return rows out of order if
        # a concurrent transaction changed the sort column — ``id`` never changes). So the plan
        # is LockRows over Sort(id): rows are locked one by one in id order, as every
        # begin_many locks them, and two callers naming the same vouchers in any orders queue
        # on the lowest shared id instead of deadlocking. The lock names the joined table
        # (``OF v``) at the top level: a locking clause on the LATERAL subquery would be pushed
        # into it (the same page: it "affects all tables used in the … sub-query") and lock
        # each row as its name resolves — in the order of the names. Under READ COMMITTED a
        # row updated while we waited is returned as its latest version; one deleted
        # meanwhile drops out (its name's position is missing).
        lock = (
            f"SELECT {self._vouchers}, c.pos FROM {resolved} "
            f"JOIN {self._schema}.vouchers AS v ON v.id = r.id ORDER BY v.id, c.pos FOR UPDATE OF v"
        )
        # run after the lock in the same pipeline (a snapshot of its own, taken once the locks
        # are granted: it sees what their previous holders committed); resolves the names
        # anew, so a voucher created meanwhile under a name that resolved by id is noticed
        # (its id is not one locked): then read by id (sessions_by_ids)
        read = (
            f"SELECT {self._sessions} FROM (SELECT DISTINCT r.id FROM {resolved}) AS v "
            f"LEFT JOIN {self._schema}.sessions AS s ON s.voucher_id = v.id ORDER BY v.id, s.key"
        )
        made = self._many[count] = (lock, read)
        return made

    def upgrade(self, version: int) -> tuple[str, ...]:
        """The statements upgrading the schema from *version* (see :data:`_schema.MIGRATIONS`)."""
        return _schema.upgrade_statements(self.dialect, version)


class _BulkStatements:
    """The statements of bulk work (batch inserts, transaction pages), qualified with the
    schema.

    A batch of vouchers is ``COPY``-ed into a temporary staging table (one per connection, its
    rows gone at commit), then moved with one ``INSERT … SELECT … ON CONFLICT DO NOTHING
    RETURNING``: no statement grows with the batch (psycopg parses a query's text on every
    execution once it is over 4 KiB), and COPY is PostgreSQL's fastest way in.
    """

    def __init__(self, schema: str) -> None:
        s = _quote_ident(schema)
        columns = ", ".join(VOUCHER_COLUMNS)
        digest = hashlib.blake2b(schema.encode(), digest_size=6).hexdigest()
        staged = f"vouchercore_staged_vouchers_{digest}"  # per schema: a connection may serve two
        self.create_staging = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staged} "
            f"(LIKE {s}.vouchers) ON COMMIT DELETE ROWS"
        )
        self.copy_staging = f"COPY {staged} ({columns}) FROM STDIN"
        self.insert_staged = (
            f"INSERT INTO {s}.vouchers ({columns}) SELECT {columns} FROM {staged} "
            "ON CONFLICT DO NOTHING RETURNING id, code"
        )
        self.ids_stored = f"SELECT id, code FROM {s}.vouchers WHERE id = ANY(%s)"
        self.select_transactions = (
            f"SELECT {_select_list(TRANSACTION_COLUMNS)} FROM {s}.transactions "
            "WHERE voucher_id = %s"
        )
        self.count_transactions = f"SELECT COUNT(*) FROM {s}.transactions WHERE voucher_id = %s"


# --- values at the boundary ------------------------------------------------------------------


def _to_db(row: Sequence[Any], instants: Sequence[int]) -> list[Any]:
    """A row of the domain's values with its instants (µs) as aware UTC datetimes."""
    values = list(row)
    for i in instants:
        if values[i] is not None:
            values[i] = from_us(values[i])
    return values


def _from_db(row: Sequence[Any], instants: Sequence[int]) -> tuple[Any, ...]:
    """A row as read, with its instants (datetimes) as integer microseconds UTC."""
    values = list(row)
    for i in instants:
        if values[i] is not None:
            values[i] = to_us(values[i])
    return tuple(values)


class PostgresStore(Store[SqlUnit]):
    """Vouchers in a PostgreSQL schema. Thread-, process- and host-safe; see the module docstring.

    Args:
        conninfo: a libpq connection string or URL (the store opens and owns a connection pool),
            a :class:`psycopg_pool.ConnectionPool` or a :class:`psycopg.Connection` (used, never
            closed by the store).
        schema: the PostgreSQL schema holding the tables (created with them when missing).
        min_size: connections the store's own pool keeps open.
        max_size: connections the store's own pool may open.
        timeout: seconds to wait for a free connection (and, for the store's own connections,
            for a connection to be established) before giving up with
            :class:`~vouchercore.errors.StorageError`.
        retries: how many times opening a unit is retried after a serialization failure, a
            deadlock or a dead pooled connection.

    Raises:
        StorageError: the database cannot be reached (the message names its host, port and
            database, never a password), or the schema holds other tables and no vouchercore
            schema, or has a schema from a newer vouchercore.
        InvalidPayload: a bad schema name, pool size, timeout or retry count.
    """

    def __init__(
        self,
        conninfo: str | ConnectionPool[Any] | psycopg.Connection[Any],
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        retries: int = 5,
    ) -> None:
        if not isinstance(schema, str) or not schema or "\x00" in schema:
            raise InvalidPayload(f"schema must be a non-empty name, got {schema!r}")
        if len(schema.encode()) > 63:
            raise InvalidPayload(f"schema name {schema!r} is longer than PostgreSQL's 63 bytes")
        for name, size in (("min_size", min_size), ("max_size", max_size), ("retries", retries)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidPayload(f"{name} must be an int ≥ 0, got {size!r}")
        if max_size < max(min_size, 1):
            raise InvalidPayload(f"max_size must be ≥ max(min_size, 1), got {max_size!r}")
        low, high = OPTION_RANGES["timeout"]
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not low <= timeout <= high
        ):
            raise InvalidPayload(
                f"timeout must be from {low:g} to {high:g} seconds, got {timeout!r}"
            )
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self.retries = retries
        self._sql = _Statements(schema)
        self._lock_key = int.from_bytes(
            hashlib.blake2b(f"vouchercore:{schema}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )
        self._connections = connections = Connections(
            conninfo,
            schema=schema,
            min_size=min_size,
            max_size=max_size,
            timeout=self.timeout,
            retries=retries,
        )
        # the connection handling the port's methods use, bound once (see _pgconn.Connections)
        self._fail = connections.fail
        self._release = connections.release
        self._attempt = connections.attempt
        self._held = connections.held
        self._read = connections.read
        self._arm = connections.arm
        connections.open(self._ensure_schema)

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """A store for ``postgresql://user@host:5432/db?schema=NAME&max_size=N`` (also
        ``min_size``, ``timeout``, ``retries``); every other query parameter goes to libpq."""
        conninfo, options = parse_postgres_url(url)
        return cls(
            conninfo,
            schema=options.get("schema", "public"),
            min_size=number_option(options, "min_size", int, 1),
            max_size=number_option(options, "max_size", int, 10),
            timeout=number_option(options, "timeout", float, 30.0),
            retries=number_option(options, "retries", int, 5),
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self.address!r}, schema={self.schema!r})"

    @property
    def address(self) -> str:
        """The database's host, port and name (never its password), as errors name it."""
        return self._connections.address

    # --- the schema -----------------------------------------------------------------------

    def _ensure_schema(self, conn: Conn) -> None:
        """Create the schema (first open) or check its version, under an advisory lock."""
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT c.relname FROM pg_class AS c "
                    "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                    "ORDER BY c.relname",
                    (self.schema,),
                ).fetchall()
            ]
            version = None
            if "vouchercore_meta" in tables:
                row = conn.execute(self._sql.version).fetchone()
                version = row[0] if row else None
            problem = _sql.schema_problem(tables, version)
            if problem is not None:
                raise StorageError(
                    f"PostgreSQL store {self.address}: schema {self.schema!r} {problem}"
                )
            if not tables:
                for statement in self._sql.ddl:
                    conn.execute(statement)
            elif isinstance(version, int) and version < SCHEMA_VERSION:
                # a migration may rewrite a large table: not bounded by statement_timeout
                conn.execute("SET LOCAL statement_timeout = 0")
                for statement in self._sql.upgrade(version):
                    conn.execute(statement)
            conn.execute("COMMIT")
        except psycopg.Error as error:
            self._connections.rollback(conn)
            raise self._fail("open", error) from error
        except BaseException:
            self._connections.rollback(conn)
            raise

    # --- vouchers -------------------------------------------------------------------------

    def insert_voucher(self, record: VoucherRecord) -> None:
        """Store a new voucher (one autocommitted ``INSERT``).

        Raises:
            DuplicateFound: its code or id is taken.
        """
        row = _to_db(_sql.voucher_row(record), VOUCHERS.instants)
        tries = 0

        def insert(lease: Lease) -> bool:
            nonlocal tries
            tries += 1
            try:
                lease.conn.execute(self._sql.insert_voucher, row)
            except pg_errors.UniqueViolation as error:
                if (
                    tries > 1
                    and lease.conn.execute(self._sql.voucher_exists, (record.id,)).fetchone()
                ):
                    return True  # our own insert, whose answer a dead connection lost
                what = "code" if error.diag.constraint_name == "vouchers_code_key" else "id"
                value = record.code if what == "code" else record.id
                raise DuplicateFound.voucher(what, value) from None
            return True

        lease, _ = self._attempt("insert voucher", insert)
        self._release(lease)

    @functools.cached_property
    def _bulk(self) -> _BulkStatements:
        return _BulkStatements(self.schema)

    def insert_vouchers(self, records: Sequence[VoucherRecord]) -> list[int]:
        """Store the records whose code and id are free in one transaction (``COPY`` into a
        staging table, then one ``INSERT … SELECT … ON CONFLICT DO NOTHING``); the positions
        of the others. Retried whole on a serialization failure, a deadlock or a dead
        connection."""
        rows = [_to_db(_sql.voucher_row(record), VOUCHERS.instants) for record in records]
        keys = [(record.id, record.code) for record in records]
        tries = 0

        def insert(lease: Lease) -> set[tuple[str, str]]:
            nonlocal tries
            tries += 1
            conn = lease.conn
            stored: set[tuple[str, str]] = set()
            conn.execute("BEGIN")
            if tries > 1:  # a lost answer to our own COMMIT: what is stored already is ours
                found = conn.execute(self._bulk.ids_stored, ([k[0] for k in keys],)).fetchall()
                stored.update((id_, code) for id_, code in found)
            conn.execute(self._bulk.create_staging)
            self._arm(lease)
            with conn.cursor().copy(self._bulk.copy_staging) as copy:
                for row in rows:
                    copy.write_row(row)
            self._arm(lease)
            cursor = conn.execute(self._bulk.insert_staged)
            stored.update((id_, code) for id_, code in cursor.fetchall())
            conn.execute("COMMIT")
            return stored

        lease, stored = self._attempt("insert vouchers", insert)
        self._release(lease)
        taken: list[int] = []
        for position, key in enumerate(keys):
            if key in stored:
                stored.discard(key)  # a second record with the same code and id was skipped
            else:
                taken.append(position)
        return taken

    def _unit(
        self, lease: Lease, row: tuple[Any, ...], sessions: Sequence[Sequence[Any]]
    ) -> SqlUnit:
        voucher = _from_db(row, VOUCHERS.instants)
        record = _sql.record_from_row(voucher, (_from_db(s, SESSIONS.instants) for s in sessions))
        return SqlUnit(
            record,
            _sql.counters_of(voucher),
            lease,
            functools.partial(self._next_transaction_seq, lease),
        )

    def _load(self, lease: Lease, code_or_id: str) -> SqlUnit | None:
        conn = lease.conn
        key = (code_or_id, code_or_id, code_or_id)
        with conn.pipeline():  # one round trip
            conn.execute("BEGIN")
            voucher = conn.execute(self._sql.lock_voucher, key)
            sessions = conn.execute(self._sql.sessions_of, key)
        row = voucher.fetchone()
        if row is None:
            return None
        found = sessions.fetchall()
        voucher_id = _sql.voucher_id(row)
        if not found or any(_sql.session_voucher_id(s) != voucher_id for s in found):
            # another voucher resolved (created meanwhile with this code): read ours by id
            self._arm(lease)
            found = conn.execute(self._sql.sessions_by_id, (voucher_id,)).fetchall()
        return self._unit(lease, row, [s for s in found if _sql.session_key(s) is not None])

    def _next_transaction_seq(self, lease: Lease) -> int:
        try:
            self._arm(lease)
            row = lease.conn.execute(self._sql.next_transaction).fetchone()
            lease.deadline = NEVER
        except psycopg.Error as error:
            raise self._connections.failed(lease, "next transaction id", error) from error
        except BaseException:
            lease.broken = True  # interrupted mid-statement: closed when the unit ends
            raise
        assert row is not None
        return int(row[0])

    def _opened(self, lease: Lease, unit: T | None) -> T | None:
        if unit is None:
            self._release(lease, quietly=True)
            return None
        held = self._held()
        held.append(lease)
        lease.held = held
        return unit

    def begin(self, code_or_id: str) -> SqlUnit | None:
        """Open a transaction with the voucher's row locked and its sessions read (one round
        trip; retried on serialization failures and deadlocks). None: not found."""
        lease, unit = self._attempt("begin", lambda lease: self._load(lease, code_or_id))
        return self._opened(lease, unit)

    def begin_redemption(self, redemption_id: str) -> tuple[SqlUnit, Redemption] | None:
        """Open a transaction on the voucher of a redemption, locked, with the redemption as
        stored once the lock is held (one round trip)."""

        def load(lease: Lease) -> tuple[SqlUnit, Redemption] | None:
            conn = lease.conn
            with conn.pipeline():
                conn.execute("BEGIN")
                voucher = conn.execute(self._sql.lock_voucher_of_redemption, (redemption_id,))
                redemption = conn.execute(self._sql.redemption, (redemption_id,))
                sessions = conn.execute(self._sql.sessions_of_redemption, (redemption_id,))
            row = voucher.fetchone()
            found = redemption.fetchone()
            if row is None or found is None:
                return None
            unit = self._unit(lease, row, sessions.fetchall())
            return unit, _sql.redemption_from_row(_from_db(found, REDEMPTIONS.instants))

        lease, opened = self._attempt("begin", load)
        return self._opened(lease, opened)

    def begin_many(self, codes: Sequence[str]) -> list[SqlUnit] | None:
        """One transaction holding several vouchers, their rows locked in id order (so two
        callers naming the same vouchers in other orders — A+B and B+A — queue rather than
        deadlock). One round trip, whatever the number of vouchers: ``BEGIN``, one statement
        resolving every code and locking the rows (see :meth:`_Statements.many`), one
        reading their sessions; one more only when a voucher was created meanwhile under a
        code that had resolved by id. One unit per voucher, in the order of *codes*; None when
        a code names no voucher (or one was force-deleted while we waited for its lock)."""
        names = list(codes)
        if not names:
            return []  # nothing to hold: no transaction

        def load(lease: Lease) -> list[SqlUnit] | None:
            conn = lease.conn
            lock, read_sessions = self._sql.many(len(names))
            with conn.pipeline():  # one round trip
                conn.execute("BEGIN")
                locked = conn.execute(lock, names)
                read = conn.execute(read_sessions, names)
            rows: dict[str, tuple[Any, ...]] = {}
            named: dict[int, str] = {}  # position in names (1-based) -> voucher id
            for found in locked.fetchall():
                row = found[:-1]
                voucher_id = _sql.voucher_id(row)
                rows[voucher_id] = row
                named[found[-1]] = voucher_id
            if len(named) < len(names):
                return None
            sessions = read.fetchall()
            if {_sql.session_voucher_id(s) for s in sessions} != rows.keys():
                # a name resolves to another voucher now (created meanwhile with that code):
                # read ours by id
                self._arm(lease)
                sessions = conn.execute(self._sql.sessions_by_ids, (sorted(rows),)).fetchall()
            held: dict[str, list[Sequence[Any]]] = {voucher_id: [] for voucher_id in rows}
            for session in sessions:
                if _sql.session_key(session) is not None:
                    held[_sql.session_voucher_id(session)].append(session)
            units = {
                voucher_id: self._unit(lease, row, held[voucher_id])
                for voucher_id, row in rows.items()
            }
            return [units[named[position]] for position in range(1, len(names) + 1)]

        lease, units = self._attempt("begin", load)
        return self._opened(lease, units)

    def commit_many(self, units: Sequence[SqlUnit]) -> None:
        """Write what the units changed and ``COMMIT``, in one round trip (all or nothing)."""
        self._commit(distinct_units(units))

    def abort_many(self, units: Sequence[SqlUnit]) -> None:
        """End the units' one transaction; nothing of any is stored (see :meth:`abort`)."""
        # a claim's placeholder row is the one thing a unit writes before its commit: then
        # roll back; otherwise end the (write-free) transaction quietly
        placeholders = any(unit.placeholders for unit in units)
        self._release(units[0].handle, rollback=placeholders, quietly=not placeholders)

    def _write(self, conn: Conn, changes: Changes) -> None:
        """Queue the unit's writes (in a pipeline: sent with the ``COMMIT``)."""
        voucher_id = changes.voucher_id
        for row in changes.keys:
            conn.execute(self._sql.upsert_key, _to_db(row, KEYS.instants))
        for key in changes.key_placeholders:
            conn.execute(self._sql.delete_key, (key,))
        for row in changes.parents:
            conn.execute(self._sql.insert_parent, _to_db(row, PARENTS.instants))
        for row in changes.parent_updates:
            conn.execute(self._sql.update_parent, row)
        if changes.purged:
            for sql in self._sql.purge:
                conn.execute(sql, (voucher_id,))
            return
        if changes.voucher is not None:
            conn.execute(
                self._sql.update_voucher,
                (*_to_db(changes.voucher, VOUCHER_MUTABLE.instants), voucher_id),
            )
        batches: tuple[tuple[str, Sequence[Sequence[Any]]], ...] = (
            (self._sql.delete_session, [(voucher_id, key) for key in changes.session_deletes]),
            (
                self._sql.insert_session,
                [_to_db(s, SESSIONS.instants) for s in changes.session_inserts],
            ),
            (
                self._sql.insert_transaction,
                [_to_db(t, TRANSACTIONS.instants) for t in changes.transactions],
            ),
            (
                self._sql.insert_redemption,
                [_to_db(r, REDEMPTIONS.instants) for r in changes.redemptions],
            ),
            (self._sql.update_redemption, changes.redemption_updates),
            (self._sql.insert_rollback, [_to_db(r, ROLLBACKS.instants) for r in changes.rollbacks]),
        )
        for sql, rows in batches:
            if len(rows) == 1:
                conn.execute(sql, rows[0])
            elif rows:
                conn.cursor().executemany(sql, rows)

    def commit(self, unit: SqlUnit) -> None:
        """Write what the unit changed and ``COMMIT``, all in one round trip (all or nothing).

        Raises:
            StorageError: the database refused or the connection failed; rolled back, nothing
                of the unit is stored (the caller may retry the operation).
        """
        self._commit((unit,))

    def _commit(self, units: Sequence[SqlUnit]) -> None:
        lease: Lease = units[0].handle
        if lease.done:
            raise StorageError(f"PostgreSQL store {self.address}: {units[0]!r} has ended already")
        conn = lease.conn
        try:
            every = [unit.changes() for unit in units]
            self._arm(lease)
            with conn.pipeline():
                if all(changes.empty for changes in every):
                    conn.execute(NO_FLUSH)
                else:
                    for changes in every:
                        self._write(conn, changes)
                conn.execute("COMMIT")
            lease.deadline = NEVER
        except psycopg.Error as error:
            interrupted = self._connections.interruption(error)
            if interrupted is not None:  # psycopg's error hides ours: the state is unknown
                lease.broken = True
                self._release(lease)
                raise interrupted from None
            self._release(lease, rollback=True)
            raise self._connections.failed(lease, "commit", error) from error
        except BaseException:
            # anything else — a value the driver cannot send, a bug, an interrupt — may have
            # left the pipeline half-sent: the connection is closed (the server rolls back)
            lease.broken = True
            self._release(lease)
            raise
        self._release(lease)

    def abort(self, unit: SqlUnit) -> None:
        """End the unit's transaction, which wrote nothing (its writes are only ever sent with
        its ``COMMIT``): nothing of the unit is stored; the voucher is released. One round
        trip."""
        self.abort_many((unit,))

    # --- idempotency keys -----------------------------------------------------------------

    def claim_key(self, unit: SqlUnit, key: str) -> KeyRecord | None:
        """Claim *key* in the unit's transaction: insert a placeholder row (a concurrent claim
        waits on it until this transaction ends), or lock and read the stored record."""
        lease: Lease = unit.handle
        conn = lease.conn
        try:
            for _ in range(10):  # a record deleted between the two statements: claim again
                self._arm(lease)  # each statement may wait up to lock_timeout for the key
                if conn.execute(self._sql.claim_key, (key,)).fetchone() is not None:
                    lease.deadline = NEVER
                    unit.placeholders.append(key)
                    return None
                self._arm(lease)
                row = conn.execute(self._sql.lock_key, (key,)).fetchone()
                lease.deadline = NEVER
                if row is not None:
                    return _sql.key_from_row(_from_db(row, KEYS.instants))
        except psycopg.Error as error:
            raise self._connections.failed(lease, "claim idempotency key", error) from error
        except BaseException:
            lease.broken = True  # interrupted mid-statement: closed when the unit ends
            raise
        raise StorageError(f"PostgreSQL store {self.address}: idempotency key {key!r} keeps moving")

    def keep_key(self, unit: SqlUnit, record: KeyRecord) -> None:
        """Write *record* with the unit's other changes at commit (replacing the placeholder)."""
        unit.kept.append(record)

    def expire_keys(self, now: int) -> int:
        """Delete key records with ``expires_at <= now`` (one statement, through the index)."""

        def delete(lease: Lease) -> int:
            count: int = lease.conn.execute(self._sql.expire_keys, (from_us(now),)).rowcount
            return count

        lease, deleted = self._attempt("expire idempotency keys", delete)
        self._release(lease)
        return deleted

    # --- reads ----------------------------------------------------------------------------

    def get_redemption(self, redemption_id: str) -> Redemption | None:
        """A redemption by id, or None."""
        rows = self._read(self._sql.redemption, (redemption_id,))
        return _sql.redemption_from_row(_from_db(rows[0], REDEMPTIONS.instants)) if rows else None

    def get_parent_redemption(self, parent_id: str) -> ParentRedemption | None:
        """A parent redemption by id (one statement), or None."""
        rows = self._read(self._sql.parent, (parent_id,))
        return _sql.parent_from_row(rows[0]) if rows else None

    def parent_redemptions(self) -> Iterator[ParentRedemption]:
        """Every parent redemption, in id order, read 1000 at a time by keyset (no long-held
        cursor)."""
        after = ""
        while True:
            rows = self._read(self._sql.parents_page, (after, _sql.CODE_PAGE))
            for row in rows:
                yield _sql.parent_from_row(row)
            if len(rows) < _sql.CODE_PAGE:
                return
            after = _sql.parent_id(rows[-1])

    def transactions(self, voucher_id: str) -> Sequence[TransactionRecord]:
        """The voucher's transactions, oldest first (one statement: one snapshot)."""
        rows = self._read(self._sql.transactions, (voucher_id,))
        return [_sql.transaction_from_row(_from_db(row, TRANSACTIONS.instants)) for row in rows]

    def transactions_page(
        self,
        voucher_id: str,
        *,
        after: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int,
    ) -> list[TransactionRecord]:
        """A keyset read through the ``(voucher_id, seq)`` index (one statement)."""
        return _sql.read_transactions_page(
            self._read,
            self._bulk.select_transactions,
            "%s",
            voucher_id,
            after=after,
            descending=descending,
            offset=offset,
            limit=limit,
            convert=functools.partial(_from_db, instants=TRANSACTIONS.instants),
        )

    def transaction_count(self, voucher_id: str) -> int:
        """How many transactions the voucher has (counted on the index)."""
        count: int = self._read(self._bulk.count_transactions, (voucher_id,))[0][0]
        return count

    def redemptions(self, voucher_id: str) -> Sequence[Redemption]:
        """The voucher's redemption log, oldest first (one statement: one snapshot)."""
        rows = self._read(self._sql.redemptions, (voucher_id,))
        return tuple(_sql.redemption_from_row(_from_db(row, REDEMPTIONS.instants)) for row in rows)

    def expiring_sessions(self, now: int, limit: int | None = None) -> list[SessionRecord]:
        """Sessions with ``expires_at <= now``, soonest first (ties by voucher id and key),
        straight from the expiry index."""
        rows = self._read(self._sql.expiring, (from_us(now), limit))
        return [_sql.detached_session(_from_db(row, DETACHED_SESSION.instants)) for row in rows]

    def points_due(self, now: int, limit: int | None = None) -> list[str]:
        """Ids of loyalty cards with points due to expire at *now*, soonest first (through the
        partial index on ``points_due_at``: cost grows with what is due)."""
        return [row[0] for row in self._read(self._sql.points_due, (from_us(now), limit))]

    def voucher_codes(self) -> Iterator[str]:
        """Every live voucher's code, in code order (byte-wise; read in pages of 1000: no
        long-held cursor)."""
        return _sql.paged_codes(
            lambda after: self._read(self._sql.codes, (_DELETED, after, _sql.CODE_PAGE))
        )

    def session_counts(self) -> SessionCounts:
        """Sessions opened, resolved and stored, read in one statement (one snapshot)."""
        row = self._read(self._sql.session_counts)[0]
        return _sql.session_counts_from_row(row)

    def session_count(self) -> int:
        """How many sessions are stored (live, or expired and not yet purged)."""
        count: int = self._read(self._sql.session_count)[0][0]
        return count

    def close(self) -> None:
        """Close the store's own pool (in this process); a pool or connection handed to the
        store is left open. Idempotent."""
        self._connections.close()
