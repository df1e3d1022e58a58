"""`redline app`: the feedback web app where people critique and revise, rank, demonstrate and compare.

Modules: ``db`` (tables, opening and migrating a database), ``projects`` (everything the app does,
without HTTP), ``security`` (passwords, sessions, CSRF, rate limit), ``web`` (the pages),
``commands`` (the ``redline app`` command group). fastapi, sqlalchemy, alembic and argon2 are
imported by those modules only, so ``import redline`` never needs them. See docs/app.md.
"""
