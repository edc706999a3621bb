#!/usr/bin/env bash
# Start the Dagster UI for this project on 127.0.0.1, offline, with a project-local instance.
# Usage: bash scripts/dagster_dev.sh [--port 3000] [other `dagster dev` options]
# Env: FLAME_PROFILE (default: default) picks the params.yaml profile the assets use;
#      DAGSTER_HOME (default: .dagster_home/ in the project) holds runs, logs and the event log.
# Runs write their data relative to the project root (data/<profile>/), as `flame` and `dvc repro` do.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dagster ] || { echo "dagster_dev: .venv/bin/dagster not found; run: bash scripts/setup.sh" >&2; exit 1; }
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
export DAGSTER_DISABLE_TELEMETRY=1
port=3000
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--port) port="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
echo "dagster_dev: UI on http://127.0.0.1:$port (profile ${FLAME_PROFILE:-default}, DAGSTER_HOME=$DAGSTER_HOME)"
exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$port" "${args[@]}"
