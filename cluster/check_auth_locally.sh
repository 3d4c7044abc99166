#!/usr/bin/env bash
# Run cluster.yaml's head and worker `ray start` flags on this machine (token auth, dashboard on
# 127.0.0.1, no CPUs on the head) and check what they promise: the dashboard listens on localhost only
# and answers 401 without the token; a driver or a worker with a wrong token is refused; a worker with
# the right token joins. Uses a throwaway HOME, temp dir and free ports, and stops only what it started.
#
#   RAY_BIN=.venv/bin/ray bash cluster/check_auth_locally.sh     # needs ray[default] (the dashboard)
set -uo pipefail
RAY_BIN=${RAY_BIN:-ray}
PY=${PY:-$(dirname "$(command -v "$RAY_BIN")")/python}
WORK=$(mktemp -d)
export HOME=$WORK/home RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
mkdir -p "$HOME"
PIDS=()
cleanup() {
  exec 2>/dev/null  # no job-control noise about the killed groups
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  sleep 3
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
FAILED=0
check() { if eval "$2"; then echo "ok    $1"; else echo "FAIL  $1"; FAILED=1; fi; }

GCS=$(free_port); DASH=$(free_port)
"$RAY_BIN" get-auth-token --generate >/dev/null 2>&1
TOKEN=$(cat "$HOME/.ray/auth_token")

setsid "$RAY_BIN" start --head --block --port="$GCS" --dashboard-host=127.0.0.1 --dashboard-port="$DASH" \
  --num-cpus=0 --disable-usage-stats --ray-client-server-port="$(free_port)" \
  --dashboard-agent-listen-port="$(free_port)" --metrics-export-port="$(free_port)" \
  --temp-dir="$WORK/ray" >"$WORK/head.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 60); do curl -s -o /dev/null "http://127.0.0.1:$DASH/" && break; sleep 2; done

check "dashboard listens on 127.0.0.1 only" \
  "[ \"\$(ss -ltnH \"sport = :$DASH\" | awk '{print \$4}')\" = 127.0.0.1:$DASH ]"
check "dashboard refuses a request without the token (401)" \
  "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$DASH/api/version)\" = 401 ]"
check "dashboard accepts the token" \
  "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer $TOKEN' \
      http://127.0.0.1:$DASH/api/version)\" = 200 ]"
DRIVER="import ray; ray.init(address='127.0.0.1:$GCS'); print('CPU', ray.cluster_resources().get('CPU', 0))"
check "a driver with the token connects; the head offers no CPU" \
  "timeout 120 \"$PY\" -c \"$DRIVER\" 2>/dev/null | grep -qx 'CPU 0'"
check "a driver with a wrong token is refused" \
  "! RAY_AUTH_TOKEN=wrong timeout 120 \"$PY\" -c \"$DRIVER\" >/dev/null 2>&1"

setsid "$RAY_BIN" start --address="127.0.0.1:$GCS" --block --num-cpus=1 --disable-usage-stats \
  --dashboard-agent-listen-port="$(free_port)" --temp-dir="$WORK/ray" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
sleep 20
check "a worker with the token joins (1 CPU appears)" \
  "timeout 120 \"$PY\" -c \"$DRIVER\" 2>/dev/null | grep -qx 'CPU 1.0'"
RAY_AUTH_TOKEN=wrong setsid "$RAY_BIN" start --address="127.0.0.1:$GCS" --block --num-cpus=1 \
  --disable-usage-stats --temp-dir="$WORK/ray" >"$WORK/bad-worker.log" 2>&1 &
BAD=$!
PIDS+=($BAD)
for _ in $(seq 60); do kill -0 "$BAD" 2>/dev/null || break; sleep 1; done
check "a worker with a wrong token is refused (exits, nonzero)" "! kill -0 $BAD 2>/dev/null && ! wait $BAD"
exit $FAILED
