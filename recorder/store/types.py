"""Column types that behave the same on SQLite and PostgreSQL.

* :class:`ExactDecimal` is ``NUMERIC`` on both. PostgreSQL stores the frame's decimal text
  exactly. SQLite has no decimal type: its NUMERIC affinity stores a value as an integer
  where it is one, else as a double, so digits past the 15th significant one are not kept
  there (Bitfinex amounts and prices have fewer; the log itself keeps every frame verbatim).
  Reads come back as :class:`decimal.Decimal` either way.
* :class:`UTCDateTime` is ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and ISO text on SQLite,
  and always returns aware UTC datetimes.
* :data:`JSONDoc` is ``JSONB`` on PostgreSQL (queryable) and JSON text on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class ExactDecimal(sa.types.TypeDecorator[Decimal]):
    impl = sa.Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            # Declared NUMERIC for affinity, but no SQLAlchemy float conversion on the way in.
            return dialect.type_descriptor(sa.types.NUMERIC(asdecimal=False))
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return str(value)  # SQLAlchemy binds it as a float; SQLite would store one anyway
        return value if isinstance(value, Decimal) else Decimal(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        return Decimal(str(value))


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class _JSONDoc(sa.types.TypeDecorator[Any]):
    """JSON, as ``JSONB`` on PostgreSQL. A decorator rather than ``with_variant`` so that the
    PostgreSQL dialect is imported only where it is used (35 ms of every SQLite command)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


JSONDoc = _JSONDoc()


def utc(at: Any) -> datetime | None:
    """A time as the database returned it (text on SQLite, naive or aware) as an aware UTC
    datetime; None for anything else."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if not isinstance(at, datetime):
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
