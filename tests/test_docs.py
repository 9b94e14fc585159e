"""The README starts with its users and quotes the one time table; docs/times.md is what
the profiles give today."""
import re
from pathlib import Path

import run_batch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_the_readme_is_short_and_opens_with_the_two_commands_and_colab():
    lines = README.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"
    heading = next(i for i, line in enumerate(lines, 1) if line.startswith("## Students"))
    assert heading < 80 and "make report" in "\n".join(lines[:heading])
    assert "make test" in "\n".join(lines[:heading])


def test_every_link_of_the_readme_and_the_docs_leads_somewhere():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name}: {target}"


def test_the_readme_quotes_the_time_table():
    quoted = README.split("<!-- times -->", 1)[1].split("<!-- /times -->", 1)[0]
    assert _table(quoted) == _table((ROOT / "docs" / "times.md").read_text())


def test_the_time_table_is_what_the_profiles_give_today():
    """docs/times.md is regenerated from params/ (python run_batch.py --times): a profile
    edited without it fails here, naming the command."""
    assert (ROOT / "docs" / "times.md").read_text() == run_batch.time_table(), \
        "run: python run_batch.py --times"


def test_the_readme_quotes_the_last_evidence_run():
    """make evidence writes EVIDENCE.md and the README's quote of it (publish_evidence):
    a README edited by hand, or an EVIDENCE.md regenerated without it, fails here."""
    from speedup.evidence import evidence_quote
    quoted = README.split("<!-- evidence -->\n", 1)[1].split("<!-- /evidence -->", 1)[0]
    expected = evidence_quote((ROOT / "EVIDENCE.md").read_text())
    assert quoted == expected + "\n", "run: make evidence"
