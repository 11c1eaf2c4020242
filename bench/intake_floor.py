"""The floor of `bench/intake.py`: a bare Flask app, one JSON POST → one SQLite insert (WAL).

Run under gunicorn by the benchmark (`gunicorn -w 2 intake_floor:app`, from this folder). The database
file is `FLOOR_DB`; every gunicorn worker opens its own connection on its first request. The same
pragmas as the embedded profile's writes (WAL, `synchronous=FULL`), one commit per request.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from typing import Any

from flask import Flask, request

app = Flask(__name__)
_conn: sqlite3.Connection | None = None


def connection() -> sqlite3.Connection:
    global _conn
    if _conn is None:
        _conn = sqlite3.connect(os.environ["FLOOR_DB"], timeout=30, isolation_level=None)
        _conn.execute("PRAGMA journal_mode=WAL")
        _conn.execute("PRAGMA synchronous=FULL")
        _conn.execute("CREATE TABLE IF NOT EXISTS posts (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    return _conn


@app.post("/floor")
def post() -> Any:
    data = request.get_json()
    row_id = str(uuid.uuid4())
    conn = connection()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO posts (id, body) VALUES (?, ?)", (row_id, json.dumps(data)))
    conn.execute("COMMIT")
    return {"id": row_id}, 201
