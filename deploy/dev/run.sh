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
sim=""
peers=()
cleanup() { [ -n "$agent" ] && kill "$agent" 2>/dev/null; [ -n "$sim" ] && kill "$sim" 2>/dev/null; for p in "${peers[@]}"; do kill "$p" 2>/dev/null; done; kill "$cp" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT INT TERM

# Wait for the API (the first start seeds the demo data), then enroll the
# demo gateway once.
up=""
for _ in $(seq 1 1200); do
  # The listener opens before the demo data is seeded; the token file marks the end.
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && { [ -f "$data/agent/device.json" ] || [ -f "$data/demo-agent.token" ]; }; then up=1; break; fi
  kill -0 "$cp" 2>/dev/null || exit 1
  sleep 0.1
done
[ -n "$up" ] || { echo "run: the control plane did not come up within 2 minutes" >&2; exit 1; }
if [ ! -f "$data/agent/device.json" ] && [ -f "$data/demo-agent.token" ]; then
  bin/gantry-agent enroll --server http://127.0.0.1:8080 --token "$(cat "$data/demo-agent.token")" --state-dir "$data/agent"
fi
# A simulated machine: an OPC-UA server with a CNC profile, read by the agent.
bin/opcuasim --port 4840 --interval 1s >"$data/opcuasim.log" 2>&1 &
sim=$!
# The agent's site config: the demo model's OPC-UA template (delivered by
# the control plane in a signed command) names the machine at
# 192.168.10.30; on this gateway the "machine" endpoint is the simulator.
cat > "$data/agent-config.json" <<'JSON'
{"opcua": {"endpoints": [{"name": "machine", "url": "opc.tcp://127.0.0.1:4840"}]}}
JSON
# A simulated HMI (VNC test pattern) and PLC port (TCP echo) on the
# gateway's loopback, and the demo model's remote-access template pointed
# at them (once), so remote sessions work out of the box.
bin/rfbserver --listen 127.0.0.1:5900 >"$data/rfbserver.log" 2>&1 &
peers+=($!)
bin/tcpecho --listen 127.0.0.1:5020 >"$data/tcpecho.log" 2>&1 &
peers+=($!)
if [ ! -f "$data/remote-demo.done" ]; then
  (
    export HOME="$PWD/$data/gantryctl" GANTRY_PASSWORD=gantry-demo-1
    ctl() { bin/gantryctl --server http://127.0.0.1:8080 "$@"; }
    ctl login --email mdm@acme.example >/dev/null
    id=$(ctl --json models list | grep -o '"id": *"[^"]*"' | head -1 | sed -E 's/.*"([^"]+)"$/\1/')
    ctl --json models show "$id" | sed -e 's/192\.168\.10\.20:5900/127.0.0.1:5900/' -e 's/192\.168\.10\.30:502"/127.0.0.1:5020"/' >"$data/demo-model.json"
    ctl models apply -f "$data/demo-model.json" >/dev/null
  ) && touch "$data/remote-demo.done" || echo "run: could not point the demo model at the local test peers (remote sessions will fail)" >&2
fi
if [ -f "$data/agent/device.json" ]; then
  bin/gantry-agent run --config "$data/agent-config.json" --state-dir "$data/agent" --metrics-listen 127.0.0.1:9101 2>"$data/agent.log" &
  agent=$!
  echo "Simulated agent: demo gateway enrolled, collecting from the OPC-UA simulator on opc.tcp://127.0.0.1:4840 with the template the control plane delivers (log: $data/agent.log, metrics: http://127.0.0.1:9101/metrics)"
  echo "Remote access: the demo gateway reaches a VNC test pattern on 127.0.0.1:5900 and a TCP echo 'PLC' on 127.0.0.1:5020 (see README: Remote access)"
fi
wait "$cp"
