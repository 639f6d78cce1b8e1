"""Runtime settings, read from the environment and an optional `.env` file.

One setting matters for most users: `DATABASE_URL`. When it is unset, bikematch
runs an embedded Postgres (with pgvector) whose data lives under
`BIKEMATCH_PGDATA` (default `./.bikematch/pgdata`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

#: The repository root: `sql/`, `dbt_project.yml` and the demo assets live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    pgdata: Path

    @property
    def embedded(self) -> bool:
        return not self.database_url


def load_settings() -> Settings:
    """Read settings; values already in the environment win over `.env`."""
    load_dotenv(Path.cwd() / ".env", override=False)
    url = os.environ.get("DATABASE_URL", "").strip() or None
    pgdata = Path(os.environ.get("BIKEMATCH_PGDATA", ".bikematch/pgdata")).expanduser()
    return Settings(database_url=url, pgdata=pgdata.resolve())
