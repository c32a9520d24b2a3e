"""The README stays a short page for users that starts with the two commands; links in it and in docs/ resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_short():
    text = README.read_text(encoding="utf-8")
    assert len(text) < 15_000, f"README.md has {len(text):,} characters; move details to docs/"


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in README.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert lines[0].startswith("# ")
    assert lines[1].startswith("```")
    assert lines[2].split()[:2] == ["make", "run"]
    assert lines[3].split()[:2] == ["make", "test"]


@pytest.mark.parametrize("doc", [README, *sorted((REPO / "docs").rglob("*.md"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_local_links_resolve(doc):
    """Relative links point at files in this repository (not outside it, e.g. ../shared)."""
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # web links and anchors in the same page
        path = target.split("#")[0]
        resolved = (REPO / path.lstrip("/")) if path.startswith("/") else (doc.parent / path)
        resolved = resolved.resolve()
        if not resolved.exists() or REPO not in (resolved, *resolved.parents):
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links that do not resolve inside the repository: {broken}"
