#!/usr/bin/env bash
# Set up the environment (see local/setup.sh) and run the test suite.
# Extra arguments go to pytest, e.g. ./test.sh -k rnnt -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./local/setup.sh
exec .venv/bin/python -m pytest tests "$@"
