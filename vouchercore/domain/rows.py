"""Values kept as one flat tuple — the shape the hot path builds and stores keep.

:class:`RowBacked` objects hold their values in a single tuple (``to_row()``) read through
typed :class:`Column` descriptors. Building one costs a tuple, several times less than an attrs
class of as many fields, and a stored row of plain values (str, int, None) is left alone by
CPython's garbage collector, which otherwise revisits every long-lived object it tracks.
Code outside this module reads such a row by field name (:meth:`RowBacked.column`), never by
position.

:class:`TransactionRows` is the one codec of a stored transaction (a
:class:`~vouchercore.domain.records.TransactionRecord`) as a row, for every store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, Generic, Self, TypeVar, overload

import attrs

from vouchercore.domain.records import Links, TransactionRecord
from vouchercore.domain.values import TransactionType

__all__ = ["TRANSACTION_FIELDS", "Column", "RowBacked", "TransactionRows", "optional"]

T = TypeVar("T")


class RowBacked:
    """Base of the immutable public objects made on every hot-path call (``Redemption``,
    ``Session``, ``ValidationResult``).

    Their values live in one flat tuple (:meth:`to_row`, in the order of ``FIELDS``) read
    through properties, instead of one attribute each: building one costs a tuple, several
    times less than an attrs class of as many fields, and a stored row of plain values is
    left alone by CPython's garbage collector. Otherwise they behave like frozen attrs classes:
    equality by value, ``repr``, :meth:`replace` (like :func:`attrs.evolve`), and
    ``FrozenInstanceError`` on assignment.
    """

    __slots__ = ("_row",)
    _row: tuple[Any, ...]
    #: the field names in row order (from the class's :class:`Column` descriptors)
    FIELDS: ClassVar[tuple[str, ...]] = ()
    #: the position of the first field added in a later release (None: none was): a row or
    #: record written before it was added reads the fields from here on as None
    ADDED_FROM: ClassVar[int | None] = None

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        columns: dict[int, str] = {}
        for name, value in vars(cls).items():
            if isinstance(value, Column):
                columns.setdefault(value.index, name)  # the first name given to a position
        cls.FIELDS = tuple(columns[i] for i in sorted(columns))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Self:
        """The object whose :meth:`to_row` is *row* (no copy, no checks: for the engine and
        stores)."""
        made = object.__new__(cls)
        object.__setattr__(made, "_row", row)
        return made

    def to_row(self) -> tuple[Any, ...]:
        """The values as one flat tuple, in the order of ``FIELDS`` (enums as their string
        values, instants as integer microseconds)."""
        return self._row

    @classmethod
    def column(cls, name: str) -> int:
        """The position of field *name* in a row (for code that keeps rows, such as stores:
        read a row by name, ``row[Redemption.column("voucher_id")]``, never by number).

        Raises:
            AttributeError: the class has no field *name*.
        """
        found = getattr(cls, name, None)
        if not isinstance(found, Column):
            raise AttributeError(f"{cls.__name__} has no field {name!r}")
        return found.index

    def row_fields(self) -> dict[str, Any]:
        """The row by field name (the values as :meth:`to_row` holds them)."""
        return dict(zip(self.FIELDS, self._row, strict=True))

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> Self:
        """The object whose :meth:`row_fields` are *values* (no copy, no checks); a field
        added in a later release (from ``ADDED_FROM`` on) may be missing: it reads as None.

        Raises:
            KeyError: another field of ``FIELDS`` is missing from *values*.
        """
        added = len(cls.FIELDS) if cls.ADDED_FROM is None else cls.ADDED_FROM
        names = cls.FIELDS
        return cls.from_row(
            tuple([values[name] for name in names[:added]] + [values.get(n) for n in names[added:]])
        )

    @classmethod
    def from_stored_row(cls, row: Sequence[Any]) -> Self:
        """The object of a row stored by this or an earlier release: a row that ends before
        the fields added later (``ADDED_FROM``) reads them as None.

        Raises:
            ValueError: the row is shorter than the fields every release wrote, or longer than
                ``FIELDS``.
        """
        width = len(cls.FIELDS)
        least = width if cls.ADDED_FROM is None else cls.ADDED_FROM
        if not least <= len(row) <= width:
            raise ValueError(f"a {cls.__name__} row has {least}–{width} values, not {len(row)}")
        return cls.from_row(tuple(row) + (None,) * (width - len(row)))

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, as the properties give them."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed."""
        values = self.as_dict()
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(unknown))}")
        values.update(changes)
        return type(self)(**values)

    def __setattr__(self, name: str, value: object) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __delattr__(self, name: str) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, RowBacked)
        return self._row == other._row

    def __hash__(self) -> int:
        return hash(self._row)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).from_row, (self._row,))


class Column(Generic[T]):
    """One field of a :class:`RowBacked` class: position *index* of the row, optionally
    converted on the way out (integer µs → datetime, enum value → member, a defensive copy).

    Reading one costs a Python-level call: fine at the API boundary, too slow for values the
    hot path itself reads many times (those stay plain slots on the records).

    A typed descriptor: ``key = Column[str](0, "The session key.")`` reads as a ``str``.
    """

    __slots__ = ("convert", "doc", "index", "name")

    def __init__(self, index: int, doc: str, convert: Callable[[Any], T] | None = None) -> None:
        self.index = index
        self.doc = doc
        self.convert = convert
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Column[T]: ...
    @overload
    def __get__(self, obj: RowBacked, owner: type) -> T: ...
    def __get__(self, obj: RowBacked | None, owner: type) -> Column[T] | T:
        if obj is None:
            return self
        value: Any = obj._row[self.index]
        return value if self.convert is None else self.convert(value)


def optional(convert: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """*convert*, but None stays None."""
    return lambda value: None if value is None else convert(value)


# --- stored transactions ---------------------------------------------------------------------

#: The fields a transaction row begins with, in order; its links (``details``) follow.
TRANSACTION_FIELDS: Final = (
    "id",
    "voucher_id",
    "type",
    "amount",
    "balance",
    "created_at",
    "source_id",
    "source",
    "reason",
    "related_transaction_id",
)
_LINKS_AT: Final = len(TRANSACTION_FIELDS)
_TX_TYPE_NAMES: Final = {t: t.value for t in TransactionType}
_TX_TYPES: Final = {t.value: t for t in TransactionType}


class TransactionRows:
    """How a store keeps a transaction record as a row of plain values: the fields of
    :data:`TRANSACTION_FIELDS` in that order (``type`` as its string value, ``created_at`` in
    integer µs), then the links.

    By default the id is kept as it is and the links are spliced in flat after the fields
    (none when ``details`` is None or empty; read back as None): a row of plain strings and
    ints only, which CPython's collector untracks at its first pass (a nested tuple would keep
    it tracked longer). A store may keep the id and the links its own way instead, as a SQL
    table does (the id as its sequence number, the links as one column of JSON text)::

        TransactionRows(
            id_to_row=transaction_seq, id_from_row=transaction_id,
            links_to_row=links_as_json, links_from_row=links_from_json,
        )

    Args:
        id_to_row: the stored form of an id (default: the id).
        id_from_row: the id of a stored form (the inverse of *id_to_row*).
        links_to_row: the stored form of links, kept in one column after the fields, None
            when there are none (default: the links spliced in flat).
        links_from_row: the links of their stored form (the inverse of *links_to_row*).
    """

    __slots__ = ("_id_from_row", "_id_to_row", "_links_from_row", "_links_to_row")

    def __init__(
        self,
        *,
        id_to_row: Callable[[str], Any] | None = None,
        id_from_row: Callable[[Any], str] | None = None,
        links_to_row: Callable[[Links], Any] | None = None,
        links_from_row: Callable[[Any], Links] | None = None,
    ) -> None:
        self._id_to_row = id_to_row
        self._id_from_row = id_from_row
        self._links_to_row = links_to_row
        self._links_from_row = links_from_row

    @staticmethod
    def column(name: str) -> int:
        """The position of field *name* (one of :data:`TRANSACTION_FIELDS`) in a row."""
        return TRANSACTION_FIELDS.index(name)

    def row(self, tx: TransactionRecord) -> tuple[Any, ...]:
        """The row of *tx*."""
        id_to_row = self._id_to_row
        head = (
            tx.id if id_to_row is None else id_to_row(tx.id),
            tx.voucher_id,
            _TX_TYPE_NAMES[tx.type],
            tx.amount,
            tx.balance,
            tx.created_at,
            tx.source_id,
            tx.source,
            tx.reason,
            tx.related_transaction_id,
        )
        links, links_to_row = tx.details, self._links_to_row
        if links_to_row is None:
            return head if links is None else head + links
        return (*head, None if links is None else links_to_row(links))

    def record(self, row: Sequence[Any]) -> TransactionRecord:
        """The transaction record of *row* (the inverse of :meth:`row`)."""
        links_from_row, id_from_row = self._links_from_row, self._id_from_row
        if links_from_row is None:
            details = tuple(row[_LINKS_AT:]) or None
        else:
            stored = row[_LINKS_AT]
            details = None if stored is None else links_from_row(stored)
        return TransactionRecord(
            row[0] if id_from_row is None else id_from_row(row[0]),
            row[1],
            _TX_TYPES[row[2]],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            details,
        )
