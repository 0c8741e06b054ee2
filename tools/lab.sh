#!/usr/bin/env bash
# The main job: installs what strata needs, then runs the lab on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/strata lab "$@"
