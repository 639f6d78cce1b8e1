"""Run dbt against the database bikematch uses.

dbt reads its connection from the PG* environment variables named in
`profiles.yml.example`; this module derives them from DATABASE_URL (or the
embedded server), so `bikematch cluster` and a plain `dbt build` agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from bikematch.database import DatabaseError
from bikematch.settings import PROJECT_ROOT

_PG_VARIABLES = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
}


def dbt_env(url: str) -> dict[str, str]:
    """The PG* variables profiles.yml.example reads, for the database at `url`."""
    params = conninfo_to_dict(url)
    return {name: str(params[key]) for key, name in _PG_VARIABLES.items() if params.get(key)}


def profiles_dir(work_dir: Path) -> Path:
    """A directory holding profiles.yml: the user's own at the root, else the example."""
    if (PROJECT_ROOT / "profiles.yml").exists():
        return PROJECT_ROOT
    target = work_dir / "dbt"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "profiles.yml.example", target / "profiles.yml")
    return target


def run_dbt(
    command: list[str],
    url: str,
    *,
    dbt_vars: dict | None = None,
    work_dir: Path | None = None,
    capture: bool = False,
) -> subprocess.CompletedProcess:
    """Run `dbt <command>` in the project root; raises DatabaseError if dbt fails."""
    work_dir = work_dir or PROJECT_ROOT / ".bikematch"
    dbt = Path(sys.executable).parent / "dbt"
    args = [str(dbt), *command, "--profiles-dir", str(profiles_dir(work_dir))]
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(dbt_env(url))
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    result = subprocess.run(
        args, cwd=PROJECT_ROOT, env=env, capture_output=capture, text=True, check=False
    )
    if result.returncode != 0:
        detail = ""
        if capture:
            errors = [line for line in result.stdout.splitlines() if "error" in line.lower()]
            detail = f": {errors[0].strip()}" if errors else ""
        raise DatabaseError(f"dbt {' '.join(command)} failed (exit {result.returncode}){detail}")
    return result
