#!/usr/bin/env bash
# Install mlserve as a user does, from pyproject.toml alone (no lock file, no extras, not
# editable), into a fresh venv, and use it: --version, --help, import every module, then
# register a model and predict with it. Fails when the code needs a package the metadata does
# not declare (issue #13: `pip install .` gave a registry that could not import filelock, and
# `make` hid it by installing from the lock).
#
# Usage: scripts/check_install.sh   (PYTHON picks the interpreter; pip's wheel cache is reused)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# Settings from the caller's environment would point the commands elsewhere, and PYTHONPATH
# could let an uninstalled copy of the package answer for the installed one.
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^MLSERVE_' || true)
unset PYTHONPATH

step() { printf 'check_install: %s\n' "$*"; }
fail() { printf 'check_install: FAILED: %s\n' "$*" >&2; exit 1; }

# Build from a copy holding what a clone holds (tracked and new files, nothing ignored): pip
# builds in the source tree, and a stale build/ there could ship modules deleted since.
mkdir "$work/source"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | tar -C "$repo" --null --ignore-failed-read -T - -cf - 2>/dev/null \
  | tar -C "$work/source" -xf - \
  || fail "could not copy the sources (is $repo a git checkout?)"

step "pip install . into a fresh venv"
"$python" -m venv "$work/venv"
bin="$work/venv/bin"
# --no-compile: modules are compiled on first import instead, which the check needs far fewer
# of. pip's log is shown only when it fails.
if ! "$bin/pip" install --quiet --disable-pip-version-check --no-compile "$work/source" \
  >"$work/pip.log" 2>&1; then
  grep -v "^WARNING: Location 'file:" "$work/pip.log" >&2
  fail "pip install failed"
fi

mkdir "$work/project"
cd "$work/project"  # no mlserve.yaml or .env here, and nothing importable but the install

step "mlserve --version"
version="$("$bin/mlserve" --version)" || fail "mlserve --version exited $?"
expected="mlserve $("$bin/python" -c 'from importlib.metadata import version; print(version("mlserve"))')"
[[ "$version" == "$expected" ]] || fail "mlserve --version printed '$version', not '$expected'"

step "mlserve --help"
"$bin/mlserve" --help >"$work/help.txt" || fail "mlserve --help exited $?"
for command in train register predict batch serve drift; do
  grep -q " $command " "$work/help.txt" || fail "mlserve --help does not list $command"
done

step "import every module"
# Modules import their dependencies at the top unless an optional extra provides them (the Dask
# engine loads distributed itself), so this finds an undeclared one whatever command needs it.
"$bin/python" - "$bin" <<'EOF' || fail "a module does not import from the installed package"
import importlib
import pkgutil
import sys

import mlserve

if not mlserve.__file__.startswith(sys.prefix):
    sys.exit(f"mlserve was imported from {mlserve.__file__}, not from the venv")
from mlserve.runtimes.loader import RUNTIMES

# env runs a migration when imported (Alembic's script), __main__ runs the command line;
# drift_report needs the `reports` extra (matplotlib), which `mlserve drift --html` asks for;
# the runtimes of frameworks that are extras import their framework (loaded only on demand).
skipped = {
    "mlserve.__main__",
    "mlserve.registry.migrations.env",
    "mlserve.monitoring.drift_report",
} | {f"mlserve.runtimes.{spec.module}" for spec in RUNTIMES.values() if spec.packages}
for module in pkgutil.walk_packages(mlserve.__path__, "mlserve."):
    if module.name not in skipped:
        importlib.import_module(module.name)
EOF

step "register a model, predict with it"
"$bin/python" - <<'EOF' || fail "could not build the test model with the installed scikit-learn"
import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

rng = np.random.default_rng(0)
frame = pd.DataFrame({"x1": rng.normal(size=30), "x2": rng.normal(size=30)})
frame["label"] = np.where(frame["x1"] + frame["x2"] > 0, "yes", "no")
frame.to_csv("train.csv", index=False)
frame.head(5).to_csv("rows.csv", index=False)
model = LogisticRegression().fit(frame[["x1", "x2"]], frame["label"])
joblib.dump(model, "model.joblib")
EOF
"$bin/mlserve" register model.joblib --name tiny --signature-from train.csv --target label \
  --alias production || fail "mlserve register exited $?"
"$bin/mlserve" predict tiny@production rows.csv -o predictions.csv \
  || fail "mlserve predict exited $?"
"$bin/python" - <<'EOF' || fail "mlserve predict wrote the wrong predictions"
import joblib
import pandas as pd

rows = pd.read_csv("rows.csv")
written = pd.read_csv("predictions.csv")
expected = joblib.load("model.joblib").predict(rows[["x1", "x2"]])
assert list(written.columns[:1]) == ["prediction"], written.columns
assert written["prediction"].tolist() == expected.tolist(), (written, expected)
assert set(written["model_version"]) == {"tiny:1"}, written["model_version"]
EOF

step "a framework whose extra is not installed: one line naming it, exit 6"
printf '{}' > booster.json
set +e
"$bin/mlserve" register booster.json --name boosted >out.txt 2>err.txt
code=$?
set -e
[[ $code -eq 6 ]] || fail "mlserve register of an XGBoost file without xgboost exited $code, not 6"
[[ $(wc -l <err.txt) -eq 1 ]] && grep -q "pip install 'mlserve\[xgboost\]'" err.txt \
  || fail "the missing-extra error is not one line naming the extra: $(cat err.txt)"

step "passed in $((SECONDS - started)) s"
