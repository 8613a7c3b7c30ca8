#!/usr/bin/env bash
# `make bench`: install the load generator and the peers, then run the benchmarks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v wrk >/dev/null || ! command -v redis-server >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk redis-server
fi
# nginx answers a fixed body: the HTTP limit on one core, beside the floor (Debian 12's package).
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx
fi
if [ ! -x "$here/.venvs/mlserver/bin/mlserver" ]; then
  python3 -m venv "$here/.venvs/mlserver"
  # MLServer 1.7.1 workers call asyncio.get_event_loop(), which uvloop 0.21+ refuses.
  "$here/.venvs/mlserver/bin/pip" install --quiet "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop<0.21"
fi
if [ ! -d "$here/.venvs/mlserver/lib/python3.11/site-packages/mlserver_xgboost" ]; then
  "$here/.venvs/mlserver/bin/pip" install --quiet "mlserver-xgboost==1.7.1" "mlserver-lightgbm==1.7.1"
fi
"$here/../.venv/bin/python" "$here/serve_bench.py" "$@"
"$here/../.venv/bin/python" "$here/coldstart_bench.py"
"$here/../.venv/bin/python" "$here/frameworks_bench.py"
"$here/../.venv/bin/python" "$here/grpc_bench.py"
"$here/../.venv/bin/python" "$here/batch_bench.py"
"$here/../.venv/bin/python" "$here/swap_bench.py"
"$here/../.venv/bin/python" "$here/shadow_bench.py"
"$here/../.venv/bin/python" "$here/overload_bench.py"
"$here/../.venv/bin/python" "$here/cache_bench.py"
