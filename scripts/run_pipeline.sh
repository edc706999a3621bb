#!/usr/bin/env bash
# Set up (idempotently) and run the whole chain on a profile (default: `default`).
# Usage: bash scripts/run_pipeline.sh [PROFILE] [extra flame options, e.g. --set train.steps=200]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-default}; shift || true
bash scripts/setup.sh
export DAGSTER_DISABLE_TELEMETRY=1 DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/flame run --profile "$profile" "$@"
