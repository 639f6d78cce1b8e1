"""Every mistake a user can make ends the same way: one line on stderr starting
`error:`, exit code 2, no traceback, and nothing already stored lost."""

from __future__ import annotations

import pytest

from .conftest import run_cli


def _one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0].removeprefix("error: ")


@pytest.fixture
def files(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("webshop_a,url_a,webshop_b,url_b\na.nl,https://a.nl/1,b.nl\n")
    binary = tmp_path / "truth.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    shops = tmp_path / "shops.yaml"
    shops.write_text(
        "shops:\n  - name: only.nl\n    platform: jsonld\n"
        "    start_urls: ['https://only.nl/fietsen']\n"
    )
    good = tmp_path / "good.csv"
    good.write_text("webshop_a,url_a,webshop_b,url_b\na.nl,https://a.nl/1,b.nl,https://b.nl/1\n")
    feed = tmp_path / "feed.csv"
    feed.write_text("url,name,price\nu1,Gazelle Ultimate C380,2499\n")
    return {
        "shops": shops,
        "truth": truth,
        "good": good,
        "binary": binary,
        "feed": feed,
        "dir": tmp_path,
    }


def test_each_mistake_is_one_line_and_exit_2(conn, database_url, files):
    env = {"DATABASE_URL": database_url}
    conn.execute(
        "insert into scraped_bikes (webshop, url, name, price, currency)"
        " values ('kept.nl', 'k1', 'Kept', 100, 'EUR')"
    )
    cases = {
        ("import", str(files["feed"]), "--shop", "x.nl", "--currency", "XY1"): "XY1",
        ("eval", "--truth", str(files["truth"])): "row 2 has fewer than the header's fields",
        ("calibrate", "--truth", str(files["truth"])): "row 2",
        ("eval", "--truth", str(files["binary"])): f"{files['binary']}: not a UTF-8",
        ("cluster", "--var", "no_such_var=1"): "unknown dbt var no_such_var",
        ("cluster", "--threshold", "1.5"): "match threshold 1.5",
        ("cluster", "--threshold", "0"): "match threshold 0",
        ("cluster", "--anchor", "nobody.nl"): "anchor shop nobody.nl has no listings",
        ("cluster", "--bogus"): "No such option",
        ("run", "--shops", str(files["shops"]), "--anchor", "elsewhere.nl"): (
            "elsewhere.nl is none of the configured shops (only.nl)"
        ),
        ("search",): "give exactly one of --image and --text",
        ("embed", "--model", "tiny-random", "--remote", "http://127.0.0.1:9"): (
            "the embedding service does not answer: http://127.0.0.1:9"
        ),
        ("embed", "--model", "no-such-model"): "unknown model 'no-such-model'",
        ("calibrate", "--truth", str(files["good"]), "--thresholds", "0.9:0.5:0.1"): (
            "START <= STOP"
        ),
    }
    for args, expected in cases.items():
        message = _one_error_line(run_cli(*args, env=env, cwd=files["dir"]))
        assert expected in message, (args, message)
    # stored listings are untouched by every refused command
    assert conn.execute("select count(*) from scraped_bikes").fetchone()[0] == 1


def test_a_report_that_cannot_be_written_is_one_line(conn, database_url, files):
    run_cli("cluster", env={"DATABASE_URL": database_url}, check=True)
    occupied = files["dir"] / "occupied"
    occupied.write_text("a file where the report's directory should be")
    out = occupied / "report"  # a directory inside a file: as unwritable as it gets for root
    result = run_cli("report", "--out", str(out), env={"DATABASE_URL": database_url})
    assert "cannot write the report to" in _one_error_line(result)
