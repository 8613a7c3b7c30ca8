#!/usr/bin/env bash
# `make demo`: a project from scratch on the embedded defaults: init, train, register, predict,
# then serve it and show a curl call that works. The server keeps running until Ctrl-C.
#
# DEMO_PORT (8080), DEMO_DIR (.demo), DEMO_READY_TIMEOUT_S (180: a cold first start on a busy
# machine has taken 24 s) and MLSERVE (the venv's command) change where and how it runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mlserve="${MLSERVE:-$root/.venv/bin/mlserve}"
demo="${DEMO_DIR:-$root/.demo}"
port="${DEMO_PORT:-8080}"
ready_timeout_s="${DEMO_READY_TIMEOUT_S:-180}"

rm -rf "$demo"
"$mlserve" init "$demo" >/dev/null
cd "$demo"
echo "== mlserve train (scikit-learn's breast cancer data) =="
"$mlserve" train data/breast_cancer.csv --target diagnosis --name cancer --alias production
echo
echo "== mlserve models list =="
"$mlserve" models list
echo
echo "== mlserve predict cancer@production (first 5 rows, in-process) =="
head -n 6 data/breast_cancer.csv > first5.csv
"$mlserve" predict cancer@production first5.csv --proba
echo
echo "== mlserve serve (port $port) =="
"$mlserve" serve --port "$port" 2> server.log &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT INT TERM

# Say why the demo stopped, with the server's last words, and exit non-zero.
fail() {
  echo "make demo failed: $1" >&2
  echo "-- last lines of $demo/server.log --" >&2
  tail -n 20 server.log >&2 || true
  exit 1
}

echo "waiting for the server to be ready (up to ${ready_timeout_s} s)..."
deadline=$((SECONDS + ready_timeout_s))
until curl -fsS --max-time 2 "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1; do
  if ! kill -0 $server 2>/dev/null; then
    wait $server && code=0 || code=$?
    fail "the server exited with code $code before it was ready"
  fi
  if [ $SECONDS -ge $deadline ]; then
    fail "the server was not ready within ${ready_timeout_s} s (DEMO_READY_TIMEOUT_S)"
  fi
  sleep 0.2
done
row=$(python3 - <<'PY'
import csv, json
with open("first5.csv") as f:
    reader = csv.DictReader(f)
    record = next(reader)
record.pop("diagnosis")
print(json.dumps({"instances": [{k: float(v) for k, v in record.items()}], "probabilities": True}))
PY
)
echo "$row" > request.json
cat <<MSG
The model is served at http://127.0.0.1:$port (logs: $demo/server.log). Try:

  curl -s http://127.0.0.1:$port/v1/models/cancer:predict -H 'Content-Type: application/json' -d @$demo/request.json

It answers:
MSG
curl -fsS "http://127.0.0.1:$port/v1/models/cancer:predict" -H 'Content-Type: application/json' -d @request.json \
  || fail "the prediction request failed"
echo
echo
echo "Open Inference Protocol: http://127.0.0.1:$port/v2/models/cancer   API docs: http://127.0.0.1:$port/docs"
if [ -t 0 ]; then
  echo "The server keeps running: press Ctrl-C to stop it."
  wait $server
else
  echo "(not on a terminal: stopping the server)"
fi
