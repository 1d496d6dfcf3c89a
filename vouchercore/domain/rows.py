"""Immutable objects kept as one flat tuple — the shape the hot path builds and stores keep.

:class:`RowBacked` objects hold their values in a single tuple (``to_row()``) read through
typed :class:`Column` descriptors. Building one costs a tuple, several times less than an attrs
class of as many fields, and a stored row of plain values (str, int, None) is left alone by
CPython's garbage collector, which otherwise revisits every long-lived object it tracks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

import attrs

__all__ = ["Column", "RowBacked", "optional"]

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
        """The object whose :meth:`row_fields` are *values* (no copy, no checks).

        Raises:
            KeyError: a field of ``FIELDS`` is missing from *values*.
        """
        return cls.from_row(tuple([values[name] for name in cls.FIELDS]))

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
    return lambda value: None if value is None else convert(value)
