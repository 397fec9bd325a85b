"""Projector state next to the checkpoint: stale, synced, skipped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

``stale``: a recorder.disconnected marker was folded and no snapshot has arrived since.
``synced``: the projection has folded at least one snapshot, so later snapshots are
reconciled against it. ``skipped``: events of this projection's kinds it could not read.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projector_checkpoints") as batch:
        batch.add_column(
            sa.Column("stale", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("synced", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("skipped", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("projector_checkpoints") as batch:
        batch.drop_column("skipped")
        batch.drop_column("synced")
        batch.drop_column("stale")
