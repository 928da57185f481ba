# Sourced by tools/test and tools/demo: use the active virtualenv, or make ./.venv, then install
# tfblackbox with TensorFlow (the `tf` extra) and the given extras. Sets $PY.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY="$PWD/.venv/bin/python"
fi
install_tfblackbox() {
  "$PY" -m pip install -q --disable-pip-version-check -e ".[$1]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$PY" -c "import tfblackbox.schema, tensorflow" >/dev/null 2>&1 \
    || { echo "install failed: tfblackbox or tensorflow does not import" >&2; exit 1; }
}
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
