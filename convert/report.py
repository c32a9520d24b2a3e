"""Markdown for reports: one table writer shared by the drift report, the Edge TPU report and the benchmarks.

Pure Python (no TensorFlow, no numpy), so the device-side benchmarks can use it too.
"""

from __future__ import annotations


def markdown_table(headers: list[str], rows: list[list], align: list[str] | None = None) -> str:
    """A GitHub Markdown table.

    headers: column titles. rows: one list of cells per row (converted with ``str``).
    align: per column ``"l"`` or ``"r"`` (default: first column left, the rest right).
    Pipes inside cells are escaped so a cell cannot break the table.
    """
    if align is None:
        align = ["l"] + ["r"] * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError("align needs one entry per column")
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"row {r!r} has {len(r)} cells, expected {len(headers)}")

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    def line(cells) -> str:
        return "|" + "|".join(f" {c} " if c else " " for c in map(cell, cells)) + "|"  # an empty cell is "| |"

    lines = [line(headers), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += [line(r) for r in rows]
    return "\n".join(lines)
