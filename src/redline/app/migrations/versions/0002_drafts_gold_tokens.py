"""Model-assisted drafts, gold items, generated answers' settings and API tokens.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("gold", sa.Text))  # the known answer (JSON), or NULL
        batch.add_column(sa.Column("draft", sa.Text))  # a critic's critique and revision (JSON), or NULL
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("critic", sa.String(500)))  # the critic run that wrote the drafts
        batch.add_column(sa.Column("generator", sa.String(500)))  # the model that wrote the answers
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("api_token_hash", sa.String(64)))
        batch.create_index("ix_users_api_token_hash", ["api_token_hash"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_api_token_hash")
        batch.drop_column("api_token_hash")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("generator")
        batch.drop_column("critic")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("draft")
        batch.drop_column("gold")
