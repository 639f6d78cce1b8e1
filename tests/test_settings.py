"""One Settings object reads every environment variable; the README documents each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bikematch.core.settings import PROJECT_ROOT, Settings, SettingsError, settings_table

from .conftest import run_cli


def test_the_readme_documents_every_setting():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme


def _reads_the_environment(path: Path) -> list[int]:
    """Lines where a module reads or writes os.environ / os.getenv itself."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
    return lines


def test_no_module_but_the_settings_reads_the_environment():
    allowed = {
        PROJECT_ROOT / "bikematch" / "core" / "settings.py",
        # passes the whole environment on to dbt's process (PG* replaced), reads none
        PROJECT_ROOT / "bikematch" / "app" / "dbt.py",
    }
    readers = {
        f"{path.relative_to(PROJECT_ROOT)}:{line}"
        for package in ("bikematch", "scrapers", "embedder", "perception_models")
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if path not in allowed
        for line in _reads_the_environment(path)
    }
    assert readers == set()


def test_settings_come_from_the_environment_over_a_dotenv_file(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE_URL=postgresql://from-dotenv/db\nBIKEMATCH_REMOTE_TIMEOUT=5\n")
    settings = Settings.from_environment(
        {"BIKEMATCH_REMOTE_TIMEOUT": "7.5", "BIKEMATCH_IMAGE_CACHE": "off"}, dotenv
    )
    assert settings.database_url == "postgresql://from-dotenv/db"
    assert settings.remote_timeout == 7.5
    assert settings.image_cache is None
    assert not settings.embedded
    defaults = Settings.from_environment({}, tmp_path / "none.env")
    assert defaults.embedded and defaults.pgdata.is_absolute()
    assert defaults.shops_file == Path("shops.yaml") and not defaults.allow_private_image_hosts


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BIKEMATCH_REMOTE_TIMEOUT", "soon"),
        ("BIKEMATCH_PROGRESS_EVERY", "-1"),
        ("BIKEMATCH_ALLOW_PRIVATE_IMAGE_HOSTS", "maybe"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path, variable, value):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_environment({variable: value}, tmp_path / "none.env")
    result = run_cli("db", "url", env={variable: value}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {variable}={value!r}: "), line
    assert not (tmp_path / ".bikematch").exists()  # refused before starting a database
