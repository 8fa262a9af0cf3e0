# Shared set-up for scripts/demo and scripts/test (sourced, not run).
# Creates .venv with Python 3.11+, installs the package with its dev/test extras when pyproject.toml
# changed since the last install, and fetches the pinned Kafka broker jars once (unless a cluster is
# configured in KAFKA_BOOTSTRAP_SERVERS).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: intelbus needs Python 3.11+ ($PYTHON is $("$PYTHON" -V 2>&1 || echo missing))." >&2
  echo "       Install it (Debian/Ubuntu: apt-get install python3 python3-venv) or set PYTHON=..." >&2
  exit 3
fi

# Fail within seconds, before any install, when no way to run Kafka exists.
"$PYTHON" -m deploy.kafka.preflight >/dev/null

if [ ! -x .venv/bin/python ]; then
  echo "intelbus: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.intelbus-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "intelbus: installing the package and its test tools into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  .venv/bin/python -m deploy.kafka.jars
fi
export PATH="$ROOT/.venv/bin:$PATH"
