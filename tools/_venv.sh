# Sourced by tools/test, tools/bench, tools/reliability and tools/demo: use the active
# virtualenv, or make ./.venv, then install tfblackbox with TensorFlow (the `tf` extra) and the
# given extras. Sets $PY.
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

# Debian packages some tests and benchmarks need: postgresql (they start their own server from
# it) and chromium (the report's pages, headless). As root with apt-get, missing ones are
# installed; otherwise what needs them fails or skips, as said.
install_debian_packages() {
  local missing=() want
  for want in "$@"; do
    case "$want" in
      postgresql) [ -d /usr/lib/postgresql ] || command -v pg_ctl >/dev/null 2>&1 \
                    || missing+=(postgresql) ;;
      chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (apt-get)" >&2
    { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1 \
      || echo "could not install ${missing[*]}: what needs them will fail or skip" >&2
  else
    echo "missing ${missing[*]} (not root or no apt-get): what needs them will fail or skip" >&2
  fi
}
