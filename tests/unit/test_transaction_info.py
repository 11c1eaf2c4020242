"""What a transaction remembers about itself (the rows it locked) ends with it."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from referral_service.db.session import make_engine, transaction_info


def test_transaction_info_is_emptied_at_commit_and_at_rollback() -> None:
    engine = make_engine("sqlite://")
    try:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            transaction_info(session)["locked"] = {"r1"}
            assert transaction_info(session) == {"locked": {"r1"}}
            session.commit()
            assert transaction_info(session) == {}, "a lock held by a committed transaction is not held any more"

            session.execute(text("SELECT 1"))
            transaction_info(session)["locked"] = {"r2"}
            session.rollback()
            assert transaction_info(session) == {}
            session.info["other"] = 1  # session.info itself is left alone
            session.commit()
            assert session.info["other"] == 1
    finally:
        engine.dispose()
