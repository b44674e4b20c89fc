"""The README's settings table is the one rendered from the settings dataclasses."""

from __future__ import annotations

import os
from pathlib import Path

from engine.config.docs import BEGIN, END, render, settings_rows

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_a_meaning() -> None:
    assert [k for k, _, meaning in settings_rows() if not meaning] == []


def test_readme_holds_the_generated_settings_table() -> None:
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    if os.environ.get("UPDATE_README"):
        README.write_text(text[:start] + render() + text[end:])
        text = README.read_text()
        start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == render(), "run UPDATE_README=1 pytest tests/unit/test_config_docs.py"
