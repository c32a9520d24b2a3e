"""Where benchmark results go: the output folder of a run (``--out``, default ``runs/bench/``, not
tracked), and, only on request (``--publish``, ``--readme``), the committed copies: ``bench/results/``
and the tables between ``<!-- bench:NAME:start -->`` / ``<!-- bench:NAME:end -->`` markers."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.common import REPO_ROOT

DEFAULT_OUT = Path("runs") / "bench"
PUBLISHED = REPO_ROOT / "bench" / "results"
# Documents whose marked sections `--publish` rewrites (those without the markers are left alone).
PUBLISHED_DOCS = (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "benchmarks.md", REPO_ROOT / "docs" / "dashboard.md",
                  REPO_ROOT / "docs" / "detection.md", REPO_ROOT / "docs" / "attention.md")
README_START = "<!-- bench:{name}:start -->"
README_END = "<!-- bench:{name}:end -->"


def write(out: Path, name: str, text: str) -> Path:
    """Write ``text`` (newline-terminated) to ``out/name``; returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    p = out / name
    p.write_text(text if text.endswith("\n") else text + "\n")
    return p


def update_readme(readme: str | Path, name: str, text: str) -> bool:
    """Replace the text between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` in
    ``readme`` with ``text``. Returns False (and changes nothing) when the markers are missing."""
    readme = Path(readme)
    doc = readme.read_text()
    start, end = README_START.format(name=name), README_END.format(name=name)
    i, j = doc.find(start), doc.find(end)
    if i < 0 or j < i:
        return False
    readme.write_text(doc[: i + len(start)] + "\n" + text.strip() + "\n" + doc[j:])
    return True


def update_docs(docs: list[Path], written: list[Path]) -> list[Path]:
    """Rewrite the marked sections of each document in ``docs`` with the Markdown results in ``written``
    (``accuracy.md`` fills ``bench:accuracy``, ...). Returns one ``"doc (section)"`` entry per rewrite."""
    done = []
    for doc in docs:
        for md in [p for p in written if p.suffix == ".md"]:  # only the tables this run produced
            if Path(doc).is_file() and update_readme(doc, md.stem, md.read_text()):
                done.append(Path(f"{doc} ({md.stem})"))
    return done


def publish(written: list[Path], dest: Path = PUBLISHED) -> list[Path]:
    """Copy this run's result files into the committed ``bench/results/`` and rewrite the marked tables
    of PUBLISHED_DOCS (README.md, docs/benchmarks.md, dashboard.md, detection.md). Returns what was written."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for p in written:
        target = dest / p.name
        if p.resolve() != target.resolve():
            shutil.copyfile(p, target)
        copied.append(target)
    return copied + update_docs(list(PUBLISHED_DOCS), copied)
