"""The annotator name an imported user was made from.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("imported_as", sa.String(200)))  # meta.annotator as the file gave it, or NULL


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("imported_as")
