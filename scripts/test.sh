#!/usr/bin/env bash
# The test command: lint, type-check, then the test suite (run from the repository root, in the project's venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
mypy
python -m pytest -q "$@"
