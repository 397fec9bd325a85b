"""``fold_findings``: rows a projection could not write (a null key, an id over 64 bits, text
a column cannot hold), kept as findings instead of stopping the fold: one row per
(account, projection, event, key), checked as each event produces its rows (so a rebuild
gives the same findings however the live fold was batched).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fold_findings",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("projection", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("row", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("account", "projection", "event_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("fold_findings")
