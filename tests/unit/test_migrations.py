"""Alembic is the only way the schema is made: the migrations must build exactly the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from referral_service.db.migrate import alembic_config, upgrade_to_head
from referral_service.db.models import Base
from referral_service.db.session import make_engine


def test_migrations_at_head_match_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'schema.sqlite3'}")
    upgrade_to_head(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrading_twice_is_harmless_and_ends_at_the_single_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.sqlite3'}"
    engine = make_engine(url)
    upgrade_to_head(engine)
    upgrade_to_head(engine)
    heads = ScriptDirectory.from_config(alembic_config(url)).get_heads()
    with engine.connect() as conn:
        assert [MigrationContext.configure(conn).get_current_revision()] == heads
    engine.dispose()
