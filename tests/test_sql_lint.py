"""sqlfluff over the dbt project, templated by dbt against the test database.

The dbt templater compiles every model, and our macros read the database
(model dimensions, the list of shops), so this runs inside the test session
rather than as a plain lint step. sql/ is linted by `make lint`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bikematch.app.dbt import dbt_env, profiles_dir
from bikematch.core.settings import PROJECT_ROOT


def test_dbt_project_is_sqlfluff_clean(database_url, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(dbt_env(database_url))
    env["DBT_PROFILES_DIR"] = str(profiles_dir(tmp_path))
    sqlfluff = Path(sys.executable).parent / "sqlfluff"
    result = subprocess.run(
        [str(sqlfluff), "lint", "dbt_project"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
