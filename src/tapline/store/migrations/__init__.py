"""Alembic migrations of the relational tables (``tapline.store.relational``); run on every start."""
