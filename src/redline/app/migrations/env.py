"""Alembic's entry point for the feedback app: migrate the engine that ``redline.app.db`` hands over."""

from alembic import context

from redline.app.db import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
