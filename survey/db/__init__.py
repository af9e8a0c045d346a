"""The database, in two parts.

* The plain part, which every feature uses: the schema's building blocks
  (``survey.db.types``: the declarative base, column types, ids) and one
  engine and session factory per app (``survey.db.sessions``).
* The SQLite fast path (``survey.db.fastpath``): a write gate and batched
  commits for the busiest writes, installed on SQLite engines only. Its
  docstring lists what each mechanism buys, as measured.
"""

from survey.db.fastpath import Work
from survey.db.sessions import (
    begin_write,
    engine,
    init_app,
    make_engine,
    new_session,
    reading_session,
    session,
    write_connection,
    write_session,
    write_together,
)
from survey.db.types import (
    BIGINT_MAX,
    INTEGER_MAX,
    NAMING_CONVENTION,
    Base,
    IsoUtc,
    JsonObject,
    Str80,
    Str200,
    Str320,
    UTCDateTime,
    new_public_id,
    one_of,
    parse_int,
    per_dialect,
)

__all__ = [
    "BIGINT_MAX",
    "INTEGER_MAX",
    "NAMING_CONVENTION",
    "Base",
    "IsoUtc",
    "JsonObject",
    "Str80",
    "Str200",
    "Str320",
    "UTCDateTime",
    "Work",
    "begin_write",
    "engine",
    "init_app",
    "make_engine",
    "new_public_id",
    "new_session",
    "one_of",
    "parse_int",
    "per_dialect",
    "reading_session",
    "session",
    "write_connection",
    "write_session",
    "write_together",
]
