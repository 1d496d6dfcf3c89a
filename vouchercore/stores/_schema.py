"""The SQL stores' schema, written once: every table's columns in row order, each with a logical
type, nullability, default and check; primary keys, uniques and indexes; the schema version and
the migrations that reach it. Each dialect's DDL is rendered from it (:func:`create_statements`,
:func:`upgrade_statements`), and every position in a row comes from it (:class:`Layout`).

Logical types and what each dialect makes of them:

============ ========= ===================================
type         SQLite    PostgreSQL
============ ========= ===================================
``key``      TEXT      ``text COLLATE "C"`` (byte-wise order and lookups, as in SQLite)
``text``     TEXT      ``text``
``int``      INTEGER   ``bigint``
``smallint`` INTEGER   ``smallint``
``instant``  INTEGER   ``timestamptz`` (SQLite: integer microseconds UTC, the domain's unit)
``json``     TEXT      ``json`` (kept exactly as written)
``identity`` INTEGER   ``bigint GENERATED ALWAYS AS IDENTITY`` (a primary key: SQLite's rowid)
============ ========= ===================================

PostgreSQL names every table with its schema (quoted); the transactions' seq high-water mark is a
``SEQUENCE`` there and a ``vouchercore_meta`` row in SQLite. A store refuses a database with a
newer schema version and upgrades an older one (:data:`MIGRATIONS`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal

import attrs

from vouchercore.domain.records import SessionEnd

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SESSION_REASONS",
    "TABLES",
    "Column",
    "Dialect",
    "Index",
    "Layout",
    "Migration",
    "Table",
    "create_statements",
    "schema_problem",
    "upgrade_statements",
]

#: The schema version this release writes.
SCHEMA_VERSION: Final = 3

#: Why a session left the ledger (:class:`~vouchercore.domain.records.SessionEnd`); each has a
#: counter column ``sessions_<reason>`` on the voucher, in this order.
SESSION_REASONS: Final = tuple(end.value for end in SessionEnd)

Type = Literal["key", "text", "int", "smallint", "instant", "json", "identity"]

_SQLITE_TYPES: Final[dict[str, str]] = {
    "key": "TEXT",
    "text": "TEXT",
    "int": "INTEGER",
    "smallint": "INTEGER",
    "instant": "INTEGER",
    "json": "TEXT",
    "identity": "INTEGER",
}
_POSTGRES_TYPES: Final[dict[str, str]] = {
    "key": 'text COLLATE "C"',
    "text": "text",
    "int": "bigint",
    "smallint": "smallint",
    "instant": "timestamptz",
    "json": "json",
    "identity": "bigint GENERATED ALWAYS AS IDENTITY",
}


# --- the specification's shape ---------------------------------------------------------------


@attrs.frozen
class Column:
    """One column: its logical type, whether it may be NULL, and its constraints.

    ``primary`` makes it the table's (single-column) primary key; ``check`` is an SQL boolean
    expression, the same in both dialects.
    """

    name: str
    type: Type
    null: bool = False
    default: str | None = None
    check: str | None = None
    primary: bool = False
    unique: bool = False


@attrs.frozen
class Index:
    """A secondary index, partial when it has a ``where`` predicate.

    ``ties`` are columns PostgreSQL's copy of the index adds at its end so that a sweep reads
    equal keys in the order it asks for straight from the index (SQLite ends every index with
    the row's key by itself).
    """

    name: str
    columns: tuple[str, ...]
    where: str | None = None
    ties: tuple[str, ...] = ()


@attrs.frozen
class Table:
    """A table: its columns in row order, a composite primary key if any, table checks,
    indexes; ``without_rowid`` for SQLite (a table clustered on its primary key)."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    without_rowid: bool = False
    layout: Layout = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        instants = (c.name for c in self.columns if c.type == "instant")
        object.__setattr__(self, "layout", Layout((c.name for c in self.columns), instants))

    def column(self, name: str) -> Column:
        """The column called *name*."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")

    def index(self, name: str) -> Index:
        """The index called *name*."""
        for index in self.indexes:
            if index.name == name:
                return index
        raise KeyError(f"{self.name} has no index {name!r}")


@attrs.frozen
class Migration:
    """What upgrading from one schema version to the next adds: columns of the specification
    (by name, appended to *table* in this order), indexes (by name), and whole tables of the
    specification (by name, created with their indexes)."""

    table: str
    columns: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()
    creates: tuple[str, ...] = ()


class Layout:
    """The positions of named values in a row: the one place a row's positions come from.

    A table's layout is its column list; a statement reading or writing some of them has a
    layout of its own (:meth:`subset`, :meth:`extended`). Instants are named, so a store that
    converts them (PostgreSQL) finds their positions in :attr:`instants`.
    """

    __slots__ = ("_at", "instant_names", "instants", "names")

    def __init__(self, names: Iterable[str], instants: Iterable[str] = ()) -> None:
        self.names: tuple[str, ...] = tuple(names)
        self._at = {name: i for i, name in enumerate(self.names)}
        if len(self._at) != len(self.names):
            raise ValueError(f"a layout names a value twice: {self.names}")
        wanted = frozenset(instants)
        self.instant_names = frozenset(n for n in self.names if n in wanted)
        #: positions of the instants, ascending
        self.instants: tuple[int, ...] = tuple(
            i for i, name in enumerate(self.names) if name in wanted
        )

    def __repr__(self) -> str:
        return f"Layout({self.names!r})"

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The position of *name*."""
        return self._at[name]

    def getter(self, *names: str) -> Callable[[Sequence[Any]], Any]:
        """A function of a row giving the value of one name, or a tuple of the values of
        several, in the order named (an :func:`operator.itemgetter`)."""
        return operator.itemgetter(*(self._at[name] for name in names))

    def since(self, name: str) -> slice:
        """The slice of a row from *name* to the end."""
        return slice(self._at[name], None)

    def arrange(self, *names: str) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
        """A function putting values given in the order of *names* (every name of the layout,
        once) into the layout's order: the identity when the orders agree."""
        if sorted(names) != sorted(self.names):
            raise ValueError(f"{names} are not the names of {self.names}")
        if names == self.names:
            return tuple
        at = {name: i for i, name in enumerate(names)}
        return operator.itemgetter(*(at[name] for name in self.names))

    def subset(self, names: Iterable[str]) -> Layout:
        """The layout of some of these names, in the order given (instants kept)."""
        names = tuple(names)
        missing = [name for name in names if name not in self._at]
        if missing:
            raise KeyError(f"not in {self.names}: {missing}")
        return Layout(names, self.instant_names)

    def extended(self, *names: str, instants: Iterable[str] = ()) -> Layout:
        """This layout with *names* appended (of which *instants* are instants)."""
        return Layout((*self.names, *names), self.instant_names | frozenset(instants))


# --- the specification -----------------------------------------------------------------------


def _nullable(type_: Type, *names: str) -> tuple[Column, ...]:
    """Columns of one type that may be NULL and have no constraint."""
    return tuple(Column(name, type_, null=True) for name in names)


def _count(name: str) -> Column:
    """A counter or amount that never goes below zero."""
    return Column(name, "int", check=f"{name} >= 0")


META: Final = Table(
    "vouchercore_meta",
    (Column("name", "key", primary=True), Column("value", "int")),
    without_rowid=True,
)

VOUCHERS: Final = Table(
    "vouchers",
    (
        Column("id", "key", primary=True),
        Column("code", "key", unique=True),
        Column(
            "type",
            "text",
            check="type IN ('DISCOUNT_VOUCHER', 'GIFT_VOUCHER', 'LOYALTY_CARD')",
        ),
        Column("state", "smallint", check="state IN (0, 1, 2)"),
        Column("quantity", "int", null=True, check="quantity IS NULL OR quantity >= 0"),
        _count("redeemed_quantity"),
        _count("redeemed_amount"),
        _count("total"),
        Column("balance", "int", check="balance >= 0 AND balance <= total"),
        Column("discount", "json", null=True),
        *_nullable("instant", "start_date", "expiration_date"),
        *_nullable("text", "category", "additional_info"),
        Column("metadata", "json", null=True),
        Column("campaign_id", "text", null=True),
        _count("opening_redeemed_quantity"),
        _count("opening_redeemed_amount"),
        Column("created_at", "instant"),
        Column("updated_at", "instant"),
        Column("expired_points", "int", default="0", check="expired_points >= 0"),
        Column("points_buckets", "text", null=True),
        Column("points_due_at", "instant", null=True),
        _count("sessions_opened"),
        *(_count(f"sessions_{reason}") for reason in SESSION_REASONS),
    ),
    checks=("quantity IS NULL OR redeemed_quantity <= quantity",),
    indexes=(
        # loyalty cards by when their next points expire (schema version 2)
        Index(
            "vouchers_by_points_due",
            ("points_due_at",),
            where="points_due_at IS NOT NULL",
            ties=("id",),
        ),
    ),
)

SESSIONS: Final = Table(
    "sessions",
    (
        Column("voucher_id", "key"),
        Column("key", "key"),
        _count("credits"),
        _count("points"),
        Column("created_at", "instant"),
        Column("expires_at", "instant"),
    ),
    primary_key=("voucher_id", "key"),
    # the sweep's order: soonest first, ties by voucher and key
    indexes=(Index("sessions_by_expiry", ("expires_at",), ties=("voucher_id", "key")),),
    without_rowid=True,
)

TRANSACTIONS: Final = Table(
    "transactions",
    (
        Column("seq", "int", primary=True),
        Column("voucher_id", "key"),
        Column("type", "text"),
        Column("amount", "int"),
        _count("balance"),
        Column("created_at", "instant"),
        *_nullable("text", "source_id", "source", "reason", "related_transaction_id"),
        Column("details", "json", null=True),
    ),
    indexes=(Index("transactions_by_voucher", ("voucher_id", "seq")),),
)

#: The voucher a log entry belongs to (its code as it was then).
_OF_VOUCHER: Final = (Column("voucher_id", "key"), Column("voucher_code", "text"))

#: ``seq`` orders the log; the rest are the columns of a redemption.
REDEMPTIONS: Final = Table(
    "redemptions",
    (
        Column("seq", "identity", primary=True),
        Column("id", "key", unique=True),
        *_OF_VOUCHER,
        Column("voucher_type", "text"),
        Column("status", "text", check="status IN ('SUCCEEDED', 'FAILED', 'ROLLED_BACK')"),
        _count("amount"),
        Column("order_amount", "int", null=True),
        *_nullable("text", "order_id", "session_key"),
        Column("metadata", "json", null=True),
        Column("date", "instant"),
        *_nullable("text", "failure_code", "failure_message", "transaction_id", "rollback_id"),
        # schema version 3: stacked redemptions, and the order and customer of each
        Column("parent_id", "key", null=True),
        Column("order_source_id", "text", null=True),
        Column("order_metadata", "json", null=True),
        Column("customer_id", "text", null=True),
        Column("customer_source_id", "text", null=True),
        Column("customer_metadata", "json", null=True),
    ),
    indexes=(Index("redemptions_by_voucher", ("voucher_id", "seq")),),
)

#: The parents of stacked redemptions (schema version 3): ``body`` is the whole parent as the
#: domain's codec writes it (:func:`vouchercore.domain.idempotency.encode`); ``status`` and
#: ``date`` are copies of its fields, for reading without decoding it. One B-tree, clustered on
#: the id (SQLite: a stack's commit dirties one page of it, not a table page and an index page).
PARENT_REDEMPTIONS: Final = Table(
    "parent_redemptions",
    (
        Column("id", "key", primary=True),
        Column("status", "text", check="status IN ('SUCCEEDED', 'FAILED', 'ROLLED_BACK')"),
        Column("date", "instant"),
        Column("body", "text"),
    ),
    without_rowid=True,
)

ROLLBACKS: Final = Table(
    "rollbacks",
    (
        Column("id", "key", primary=True),
        Column("redemption_id", "key", unique=True),
        *_OF_VOUCHER,
        Column("amount", "int", check="amount <= 0"),
        Column("reason", "text", null=True),
        Column("date", "instant"),
        Column("transaction_id", "text", null=True),
    ),
    indexes=(Index("rollbacks_by_voucher", ("voucher_id",)),),
)

IDEMPOTENCY_KEYS: Final = Table(
    "idempotency_keys",
    (
        Column("key", "key", primary=True),
        Column("fingerprint", "text"),
        Column("result", "text"),
        Column("created_at", "instant"),
        Column("expires_at", "instant", check="expires_at >= created_at"),
    ),
    indexes=(Index("idempotency_keys_by_expiry", ("expires_at",)),),
    without_rowid=True,
)

#: Every table, in the order they are created.
TABLES: Final = (
    META,
    VOUCHERS,
    SESSIONS,
    TRANSACTIONS,
    REDEMPTIONS,
    ROLLBACKS,
    IDEMPOTENCY_KEYS,
    PARENT_REDEMPTIONS,
)
_BY_NAME: Final = {table.name: table for table in TABLES}

#: Schema migrations, by the version they start from. Version 2: loyalty points buckets.
#: Version 3: stacked redemptions (the parents' table, a child's parent), and the order and
#: customer kept with each redemption.
MIGRATIONS: Final[dict[int, Migration]] = {
    1: Migration(
        "vouchers",
        columns=("expired_points", "points_buckets", "points_due_at"),
        indexes=("vouchers_by_points_due",),
    ),
    2: Migration(
        "redemptions",
        columns=(
            "parent_id",
            "order_source_id",
            "order_metadata",
            "customer_id",
            "customer_source_id",
            "customer_metadata",
        ),
        creates=("parent_redemptions",),
    ),
}

#: The name of the high-water mark of transaction seqs (a sequence, or a meta row).
TRANSACTION_SEQ: Final = "transaction_seq"


def schema_problem(tables: Sequence[str], version: object) -> str | None:
    """Why this release cannot use a database holding *tables* whose ``vouchercore_meta`` says
    schema *version* (``None`` when it has no meta table) — or None: it is ours (at this
    version or one :data:`MIGRATIONS` upgrades), or empty.

    One decision for every SQL store: a database with other tables and no vouchercore schema
    is someone else's; a newer version needs a newer vouchercore; an older one is migrated.
    """
    if META.name not in tables:
        if tables:
            return f"holds other tables ({', '.join(sorted(tables)[:5])}) and no vouchercore schema"
        return None
    if version == SCHEMA_VERSION or (isinstance(version, int) and version in MIGRATIONS):
        return None
    newer = isinstance(version, int) and version > SCHEMA_VERSION
    return f"schema version {version}, this vouchercore reads version {SCHEMA_VERSION}" + (
        " (upgrade vouchercore)" if newer else ""
    )


# --- rendering -------------------------------------------------------------------------------


@attrs.frozen
class Dialect:
    """How one database spells the specification: type names, the prefix naming a table
    (PostgreSQL: its quoted schema), and which of the two it is."""

    postgres: bool
    prefix: str = ""

    @classmethod
    def sqlite(cls) -> Dialect:
        """SQLite: one file, one namespace."""
        return cls(postgres=False)

    @classmethod
    def postgresql(cls, quoted_schema: str) -> Dialect:
        """PostgreSQL, every name qualified with *quoted_schema* (already quoted)."""
        return cls(postgres=True, prefix=f"{quoted_schema}.")

    def type_name(self, column: Column) -> str:
        """The column's type in this dialect."""
        return (_POSTGRES_TYPES if self.postgres else _SQLITE_TYPES)[column.type]

    def column(self, column: Column) -> str:
        """A column definition: ``name type [PRIMARY KEY] [NOT NULL] [UNIQUE] [DEFAULT …]
        [CHECK (…)]`` (a primary key is not null by itself)."""
        parts = [column.name, self.type_name(column)]
        if column.primary:
            parts.append("PRIMARY KEY")
        elif not column.null:
            parts.append("NOT NULL")
        if column.unique:
            parts.append("UNIQUE")
        if column.default is not None:
            parts.append(f"DEFAULT {column.default}")
        if column.check is not None:
            parts.append(f"CHECK ({column.check})")
        return " ".join(parts)

    def table(self, table: Table) -> str:
        """``CREATE TABLE`` of *table*."""
        lines = [self.column(column) for column in table.columns]
        if table.primary_key:
            lines.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
        lines.extend(f"CHECK ({check})" for check in table.checks)
        body = ",\n    ".join(lines)
        suffix = " WITHOUT ROWID" if table.without_rowid and not self.postgres else ""
        return f"CREATE TABLE {self.prefix}{table.name} (\n    {body}\n){suffix}"

    def index(self, table: Table, index: Index) -> str:
        """``CREATE INDEX`` of *index* on *table*."""
        columns = (*index.columns, *index.ties) if self.postgres else index.columns
        where = f" WHERE {index.where}" if index.where is not None else ""
        return (
            f"CREATE INDEX {index.name} ON {self.prefix}{table.name} ({', '.join(columns)}){where}"
        )


def create_statements(dialect: Dialect) -> tuple[str, ...]:
    """The statements creating the whole schema, at :data:`SCHEMA_VERSION`, in order."""
    statements: list[str] = []
    meta = f"{dialect.prefix}{META.name}"
    if dialect.postgres:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {dialect.prefix[:-1]}")
    for table in TABLES:
        statements.append(dialect.table(table))
        statements.extend(dialect.index(table, index) for index in table.indexes)
        if dialect.postgres and table is SESSIONS:
            statements.append(
                f"CREATE SEQUENCE {dialect.prefix}{TRANSACTION_SEQ} AS bigint "
                "MINVALUE 1 START 1 CACHE 1 NO CYCLE"
            )
    if dialect.postgres:
        rows = f"('schema_version', {SCHEMA_VERSION})"
    else:
        rows = f"('schema_version', {SCHEMA_VERSION}), ('{TRANSACTION_SEQ}', 0)"
    statements.append(f"INSERT INTO {meta} (name, value) VALUES {rows}")
    return tuple(statements)


def upgrade_statements(dialect: Dialect, version: int) -> tuple[str, ...]:
    """The statements upgrading a schema at *version* to :data:`SCHEMA_VERSION` (run in one
    transaction), ending with the new version in ``vouchercore_meta``."""
    statements: list[str] = []
    for step in range(version, SCHEMA_VERSION):
        migration = MIGRATIONS[step]
        table = _BY_NAME[migration.table]
        statements.extend(
            f"ALTER TABLE {dialect.prefix}{table.name} "
            f"ADD COLUMN {dialect.column(table.column(name))}"
            for name in migration.columns
        )
        statements.extend(dialect.index(table, table.index(name)) for name in migration.indexes)
        for name in migration.creates:
            created = _BY_NAME[name]
            statements.append(dialect.table(created))
            statements.extend(dialect.index(created, index) for index in created.indexes)
    statements.append(
        f"UPDATE {dialect.prefix}{META.name} SET value = {SCHEMA_VERSION} "
        "WHERE name = 'schema_version'"
    )
    return tuple(statements)
