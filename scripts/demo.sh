#!/usr/bin/env bash
# `make demo`: a project from scratch on the embedded defaults: init, train, register, predict,
# then serve it and show a curl call that works. The server keeps running until Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mlserve="$root/.venv/bin/mlserve"
demo="$root/.demo"
port="${DEMO_PORT:-8080}"

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
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat server.log; exit 1; }
  sleep 0.1
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
The model is served at http://127.0.0.1:$port (logs: .demo/server.log). Try:

  curl -s http://127.0.0.1:$port/v1/models/cancer:predict -H 'Content-Type: application/json' -d @.demo/request.json

It answers:
MSG
curl -fsS "http://127.0.0.1:$port/v1/models/cancer:predict" -H 'Content-Type: application/json' -d @request.json
echo
echo
echo "Open Inference Protocol: http://127.0.0.1:$port/v2/models/cancer   API docs: http://127.0.0.1:$port/docs"
if [ -t 0 ]; then
  echo "Press Ctrl-C to stop the server."
  wait $server
else
  echo "(not on a terminal: stopping the server)"
fi
