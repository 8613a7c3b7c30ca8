#!/usr/bin/env bash
# The generic image's size and cold start, measured with podman as ../shared/TESTING.md builds
# it (a Debian base made by mmdebstrap, runc, storage of our own in a temp folder), from the
# repository's Dockerfile with its default EXTRAS. Results: bench/results/image.md.
#
#   bench/image_bench.sh                  # base + generic image, 5 cold starts
#   RUNS=10 CORE=1 bench/image_bench.sh   # more runs; CORE=1 also builds EXTRAS= (no extras)
#   BASE_TAR=/tmp/base.tar bench/image_bench.sh   # reuse a base tarball (made if missing)
#
# Needs root, podman, runc, mmdebstrap and curl (apt-get install podman runc mmdebstrap curl),
# and mlserve's venv in .venv (it makes the one model folder served). Everything it starts it
# removes on exit; its podman storage is its own folder, removed too.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
CORE=${CORE:-0}
PY=${PY:-$ROOT/.venv/bin/python}
W=$(mktemp -d /tmp/mlserve-image-bench.XXXXXX)
BASE_TAR=${BASE_TAR:-$W/base.tar}
BASE=localhost/debian-base:bookworm
TAG=localhost/mlserve:bench
NAME=mlserve-bench-$$

printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' "$W" "$W" >"$W/storage.conf"
printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' >"$W/containers.conf"
export CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf

cleanup() {
  podman rm --force "$NAME" >/dev/null 2>&1 || true
  podman rmi --all --force >/dev/null 2>&1 || true # this storage's images only
  rm -rf "$W"
}
trap cleanup EXIT

# Without systemd, podman logs an error for each health-check timer it cannot add or remove
# (health checks run only when called here): noise, filtered out of the container commands.
quiet_podman() { podman "$@" 2> >(grep -v 'systemd' >&2); }
free_port() { "$PY" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
mb() { awk -v b="$1" 'BEGIN{printf "%.0f MB", b/1000000}'; }
now() { date +%s.%N; }

echo "## machine"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cpu: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "kernel: $(uname -r); $(podman --version); runc $(runc --version | awk 'NR==1{print $3}')"
echo "commit: $(git -C "$ROOT" rev-parse --short HEAD) (work tree as it is, uncommitted changes included)"

echo "## base"
if [ ! -f "$BASE_TAR" ]; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  start=$(now)
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    bookworm "$BASE_TAR" "$MIRROR"
  echo "mmdebstrap: $(awk -v s="$start" -v e="$(now)" 'BEGIN{printf "%.0f s", e-s}')"
fi
podman import --quiet --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE" >/dev/null
base_bytes=$(podman image inspect --format '{{.Size}}' "$BASE")
echo "base image: $base_bytes bytes ($(mb "$base_bytes"))"

build() { # build TAG [podman build args...]: prints the build's wall time
  local tag=$1
  shift
  local start
  start=$(now)
  podman build --quiet --format docker --network=host --build-arg BASE="$BASE" \
    --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt "$@" -t "$tag" "$ROOT" >/dev/null
  echo "build $tag $*: $(awk -v s="$start" -v e="$(now)" 'BEGIN{printf "%.0f s", e-s}')"
}

echo "## image (default EXTRAS: $(awk -F= '/^ARG EXTRAS=/{print $2}' "$ROOT/Dockerfile"))"
build "$TAG"
bytes=$(podman image inspect --format '{{.Size}}' "$TAG")
echo "image: $bytes bytes ($(mb "$bytes")) = base $(mb "$base_bytes") + runtime dependencies and mlserve $(mb $((bytes - base_bytes)))"
echo "largest packages in /opt/venv (du, MB):"
quiet_podman run --rm --entrypoint sh "$TAG" -c \
  'cd /opt/venv/lib/python3*/site-packages && du -sm -- * | sort -rn | head -15' | sed 's/^/  /'
if [ "$CORE" = 1 ]; then
  build "$TAG-core" --build-arg EXTRAS=
  core=$(podman image inspect --format '{{.Size}}' "$TAG-core")
  echo "image with EXTRAS= (core only): $core bytes ($(mb "$core")); the default extras add $(mb $((bytes - core)))"
fi

echo "## cold start: podman run to 200 on /v2/health/ready, one model in /mnt/models"
"$PY" - "$W" <<'EOF'
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

work = Path(sys.argv[1])
frame = load_iris(as_frame=True).frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
model.fit(frame.drop(columns="target"), frame["target"])
joblib.dump(model, work / "model.joblib")
frame.to_csv(work / "iris.csv", index=False)
EOF
MLSERVE=("$(dirname "$PY")/mlserve" --home "$W/home")
(cd "$W" && "${MLSERVE[@]}" register model.joblib --name iris --signature-from iris.csv \
  --target target --alias production >/dev/null)
"${MLSERVE[@]}" build iris@production --tag unused --engine none --output "$W/context" >/dev/null
MODEL=$W/context/models/iris/1 # a self-describing version folder, as KServe mounts one
for run in $(seq "$RUNS"); do
  PORT=$(free_port)
  start=$(now)
  quiet_podman run --detach --name "$NAME" --read-only -p "127.0.0.1:$PORT:8080" \
    -v "$MODEL:/mnt/models:ro" "$TAG" >/dev/null
  deadline=$(($(date +%s) + 120))
  until curl -fs -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready"; do
    [ "$(date +%s)" -lt "$deadline" ] || { podman logs "$NAME"; exit 1; }
    sleep 0.05
  done
  ready=$(awk -v s="$start" -v e="$(now)" 'BEGIN{printf "%.2f", e-s}')
  sleep 3 # idle: after start-up's allocations settle
  memory=$(podman stats --no-stream --format '{{.MemUsage}}' "$NAME" | cut -d/ -f1)
  start=$(now)
  quiet_podman stop --time 30 "$NAME" >/dev/null
  stop=$(awk -v s="$start" -v e="$(now)" 'BEGIN{printf "%.2f", e-s}')
  code=$(podman inspect "$NAME" --format '{{.State.ExitCode}}')
  echo "run $run: ready after ${ready} s; idle memory ${memory}; podman stop ${stop} s, exit code $code"
  quiet_podman rm "$NAME" >/dev/null
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
