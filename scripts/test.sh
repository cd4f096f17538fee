#!/usr/bin/env bash
# One command for the whole test suite, as CI runs it: the fast tests, then the slow model tests and
# the headless-browser test. `pytest` alone (inside .venv) runs only the fast ones.
SEAM_EXTRAS=test,ray source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# Debian's Chromium for the browser test (Playwright drives it; no browser download).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
run() {  # pytest exit 5 = "no tests collected" is not a failure of the suite
  local rc=0; .venv/bin/python -m pytest "$@" || rc=$?
  if [ "$rc" = 5 ]; then rc=0; fi
  return "$rc"
}
run -m "not slow and not browser" "$@"
run -m "slow or browser" "$@"
