#!/usr/bin/env bash
# Runs the Gantry product for a developer: the control plane in dev mode
# (SQLite + embedded MQTT broker + demo data in .gantry-dev/) and a
# simulated agent enrolled as the demo gateway. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=.gantry-dev
mkdir -p "$data"
bin/gantry-controlplane serve --dev --data-dir "$data" "$@" &
cp=$!
agent=""
cleanup() { [ -n "$agent" ] && kill "$agent" 2>/dev/null; kill "$cp" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT INT TERM

# Wait for the API, then enroll the demo gateway once.
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  kill -0 "$cp" 2>/dev/null || exit 1
  sleep 0.1
done
if [ ! -f "$data/agent/device.json" ] && [ -f "$data/demo-agent.token" ]; then
  bin/gantry-agent enroll --server http://127.0.0.1:8080 --token "$(cat "$data/demo-agent.token")" --state-dir "$data/agent"
fi
if [ -f "$data/agent/device.json" ]; then
  bin/gantry-agent run --state-dir "$data/agent" --metrics-listen 127.0.0.1:9101 --simulate 1 2>"$data/agent.log" &
  agent=$!
  echo "Simulated agent: demo gateway enrolled and connected (log: $data/agent.log, metrics: http://127.0.0.1:9101/metrics)"
fi
wait "$cp"
