"""An annotation's time may be unknown: NULL, where imports stored 0.0.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("annotations") as batch:
        batch.alter_column("seconds", existing_type=sa.Float, nullable=True)  # NULL: not timed
    # an import without meta.seconds stored 0.0 (the quality page read it as not timed): say so
    op.execute("UPDATE annotations SET seconds = NULL WHERE imported AND seconds = 0")


def downgrade() -> None:
    op.execute("UPDATE annotations SET seconds = 0 WHERE seconds IS NULL")
    with op.batch_alter_table("annotations") as batch:
        batch.alter_column("seconds", existing_type=sa.Float, nullable=False)
