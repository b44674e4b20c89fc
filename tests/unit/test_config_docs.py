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


def test_the_example_config_speaks_to_the_simulator_as_it_starts_by_default() -> None:
    """config.toml says it points at `temu-sync simulate` (defaults: port 8765, seed 1, two
    shops): its credentials must be the ones that simulator accepts."""
    from engine.cli import build_parser
    from engine.config.parse import load_config
    from engine.sim.config import SimConfig

    example = load_config(README.parent / "config.toml", env={})
    args = build_parser().parse_args(["simulate"])
    sim = SimConfig.default(shops=args.shops, seed=args.seed)
    assert {(a.app_key, a.app_secret.get()) for a in example.apps} == {
        (a.app_key, a.app_secret) for a in sim.apps
    }
    assert {(s.id, s.access_token.get()) for s in example.shops} == {
        (s.shop_id, s.access_token) for s in sim.shops
    }
    port = args.listen.rsplit(":", 1)[1]
    assert all(f":{port}/" in a.base_url for a in example.apps)
