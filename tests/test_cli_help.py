"""Every command's `--help`, word for word, against the golden files in tests/golden/help/: the
layout of the package may change, what a user is offered may not (unless a golden file is
rewritten on purpose: BERTKIT_UPDATE_GOLDEN=1 pytest tests/test_cli_help.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from bertkit.cli import build_parser

GOLDEN = Path(__file__).parent / "golden" / "help"


def commands() -> dict[str, argparse.ArgumentParser]:
    """'bertkit', 'bertkit model', 'bertkit model init', ... -> their parsers."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(f"{name} {sub}", child)

    walk("bertkit", build_parser())
    return found


def render(parser: argparse.ArgumentParser) -> str:
    return parser.format_help()


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")


def test_every_command_has_a_golden_help():
    names = {name.replace(" ", "_") + ".txt" for name in commands()}
    if os.environ.get("BERTKIT_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, parser in commands().items():
            (GOLDEN / (name.replace(" ", "_") + ".txt")).write_text(render(parser), encoding="utf-8")
    assert names == {p.name for p in GOLDEN.glob("*.txt")}


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_unchanged(name):
    want = (GOLDEN / (name.replace(" ", "_") + ".txt")).read_text(encoding="utf-8")
    assert render(commands()[name]) == want
