"""The shared Markdown table writer (convert/report.py)."""

import pytest

from convert.report import markdown_table


def test_markdown_table_layout_and_escaping():
    text = markdown_table(["model", "acc"], [["a|b", "1.0%"], ["c", 2]])
    assert text.splitlines() == ["| model | acc |", "|---|---:|", "| a\\|b | 1.0% |", "| c | 2 |"]
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


def test_markdown_table_alignment():
    assert markdown_table(["a", "b", "c"], [], align=["l", "r", "l"]).splitlines()[1] == "|---|---:|---|"
