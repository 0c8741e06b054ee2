#!/usr/bin/env bash
# The test command: installs what the tests need, then lint, type checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
# Two workers (the machines have two cores); a test file stays on one worker, so its fixtures are built once.
exec .venv/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
