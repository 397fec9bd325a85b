"""Provenance of final states: ``confirmed_by`` on orders, positions and the funding tables.

A REST history row (``orders/hist``, ``positions/hist``, ...) for an entity a frame had
already closed no longer replaces the row's ``event_id``: the frame's stays when the answer
only repeats it, the answer's when it changed a value (a final status the socket never
sent), and ``confirmed_by`` names the answer either way.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("orders", "positions", "funding_offers", "funding_credits", "funding_loans")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("confirmed_by", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("confirmed_by")
