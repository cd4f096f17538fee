# Shared by demo.sh and test.sh: create .venv with Python 3.11 and install the project into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
  echo "SEAM Lens needs Python >= 3.11 (found $("$PY" --version))" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
EXTRAS=${SEAM_EXTRAS:-}  # set by the caller; never read "$1" (sourcing passes the caller's args)
STAMP=".venv/.seam-installed${EXTRAS:+-$EXTRAS}"
# Reinstall only when pyproject.toml changed since the last install (fast reruns).
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first, pinned: the CPU wheel where one is on disk, the default build elsewhere.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$STAMP"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
