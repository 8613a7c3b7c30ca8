#!/usr/bin/env bash
# `make demo`: a project from scratch on the embedded defaults: init, train, register, predict.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mlserve="$root/.venv/bin/mlserve"
demo="$root/.demo"

rm -rf "$demo"
"$mlserve" init "$demo" >/dev/null
cd "$demo"
echo "== mlserve train (bundled breast-cancer data) =="
"$mlserve" train data/breast_cancer.csv --target diagnosis --name cancer --alias production
echo
echo "== mlserve models list =="
"$mlserve" models list
echo
echo "== mlserve predict cancer@production (first 5 rows) =="
head -n 6 data/breast_cancer.csv > first5.csv
"$mlserve" predict cancer@production first5.csv --proba
