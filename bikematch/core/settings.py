"""Every setting bikematch reads from the environment (or a `.env` file), in one place.

`Settings.from_environment()` is called once, by the command line (or a test), and the
object is passed down: no other module reads an environment variable of bikematch's.
Each field names its variable, its default and what it does; the README's
configuration table is checked against these fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from dotenv import dotenv_values

#: The repository root: `sql/`, `dbt_project.yml` and the demo assets live here.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "sql"

DEFAULT_CONTACT = "https://github.com/bikematch/bikematch"
ECB_DAILY_URL = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-daily.xml"


class SettingsError(ValueError):
    """A setting's value is not one bikematch can use; the message names the variable."""


def _setting(env: str, help: str, default=None):
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _setting(
        "DATABASE_URL",
        "any Postgres >= 15 with pgvector >= 0.7, e.g. a Supabase connection string; "
        "unset: the embedded server",
    )
    pgdata: Path = _setting(
        "BIKEMATCH_PGDATA", "data directory of the embedded server", Path(".bikematch/pgdata")
    )
    shops_file: Path = _setting("BIKEMATCH_SHOPS", "the shops configuration", Path("shops.yaml"))
    contact: str = _setting(
        "BIKEMATCH_CONTACT",
        "contact URL or e-mail in the scraper's User-Agent",
        DEFAULT_CONTACT,
    )
    pe_core_weights: Path | None = _setting(
        "BIKEMATCH_PE_CORE_WEIGHTS",
        "local `PE-Core-L14-336.pt`; unset: downloaded from `facebook/PE-Core-L14-336`",
    )
    clip_tokenizer: Path | None = _setting(
        "BIKEMATCH_CLIP_TOKENIZER",
        "directory with CLIP's `vocab.json` + `merges.txt`; unset: from "
        "`openai/clip-vit-base-patch32`",
    )
    clip_weights: Path | None = _setting(
        "BIKEMATCH_CLIP_WEIGHTS", "local CLIP ViT-B/32 directory; unset: from the hub"
    )
    image_cache: Path | None = _setting(
        "BIKEMATCH_IMAGE_CACHE",
        "image cache directory (`off` for none); the report's thumbnails come from it",
        Path(".bikematch/image-cache"),
    )
    allow_private_image_hosts: bool = _setting(
        "BIKEMATCH_ALLOW_PRIVATE_IMAGE_HOSTS",
        "`1` lets the embedder fetch images from private addresses",
        False,
    )
    remote_token: str | None = _setting(
        "BIKEMATCH_REMOTE_TOKEN", "bearer token of a hosted embedding backend (`--remote`)"
    )
    remote_timeout: float = _setting(
        "BIKEMATCH_REMOTE_TIMEOUT", "seconds a hosted embedding backend may take a batch", 60.0
    )
    serve_token: str | None = _setting(
        "BIKEMATCH_SERVE_TOKEN",
        "bearer token `serve` requires on every request but /health",
    )
    rates_url: str = _setting(
        "BIKEMATCH_RATES_URL",
        "where `rates` and `run` read exchange rates (the ECB's eurofxref XML format)",
        ECB_DAILY_URL,
    )
    progress_every: float = _setting(
        "BIKEMATCH_PROGRESS_EVERY",
        "seconds between embedding progress lines where stderr is not a terminal",
        30.0,
    )
    httpcache: bool = _setting(
        "BIKEMATCH_HTTPCACHE",
        "`1` replays scraped pages from `.scrapy/httpcache` (for development)",
        False,
    )

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = None
    ) -> Settings:
        """Read every setting; a variable in the environment wins over `.env` (by default
        the one in the working directory). Raises SettingsError for an unusable value."""
        environ = os.environ if environ is None else environ
        dotenv = Path.cwd() / ".env" if dotenv is None else dotenv
        values = {k: v for k, v in dotenv_values(dotenv).items() if v is not None}
        values.update(environ)
        given = {}
        for spec in fields(cls):
            raw = values.get(spec.metadata["env"], "").strip()
            if raw:
                given[spec.name] = _convert(spec, raw)
        settings = cls(**given)
        return replace(settings, pgdata=settings.pgdata.expanduser().resolve())


def _convert(spec, raw: str):
    env = spec.metadata["env"]
    kind = spec.type
    if spec.name == "image_cache":
        return None if raw.lower() == "off" else Path(raw).expanduser()
    if "bool" in kind:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{env}={raw!r}: give 1 or 0")
    if "float" in kind:
        try:
            number = float(raw)
        except ValueError:
            number = -1.0
        # Progress lines every 0 seconds: a line after every batch (for a log).
        lowest_ok = 0.0 if spec.name == "progress_every" else 1e-9
        if not number >= lowest_ok:
            raise SettingsError(f"{env}={raw!r}: give a number of seconds above 0")
        return number
    if "Path" in kind:
        return Path(raw).expanduser()
    return raw


def settings_table() -> str:
    """The README's configuration table, a row per setting (a test keeps them equal)."""
    rows = ["| setting | meaning | default |", "|---|---|---|"]
    for spec in fields(Settings):
        default = spec.default
        if default is None:
            shown = "unset"
        elif isinstance(default, bool):
            shown = "1" if default else "0"
        else:
            shown = f"`{default}`"
        rows.append(f"| `{spec.metadata['env']}` | {spec.metadata['help']} | {shown} |")
    return "\n".join(rows) + "\n"
