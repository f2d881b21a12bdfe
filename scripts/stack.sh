#!/usr/bin/env bash
# The whole platform on localhost with real services, no Docker (`make stack`, `make stack-stop`):
#   PostgreSQL + Redis (started if down), an MLflow tracking server + UI (backend store in
#   PostgreSQL), a Prefect server + UI, RecoLab's deployments served (`recolab deploy`) and
#   the BentoML service (`recolab serve`), each a background process with a pid file and a
#   log under data/stack/.
#   The stack signs and checks tokens with a JWT secret of its own, not the development
#   default: random, created once in data/stack/jwt_secret (mode 0600; data/ is not in git)
#   and reused. `eval "$(scripts/stack.sh env)"` gives a shell the stack's settings (URLs
#   and that secret), so that `recolab token` there issues tokens the service accepts.
# Usage: scripts/stack.sh start|stop|status|env
# Ports and URLs: STACK_MLFLOW_PORT (5000), STACK_PREFECT_PORT (4200), STACK_SERVE_PORT (3000),
#   STACK_POSTGRES (postgresql://postgres@127.0.0.1:5432), STACK_REDIS_URL (redis://127.0.0.1:6379/0).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$(pwd)
BIN=${BIN:-$ROOT/.venv/bin}
STACK=${STACK_DIR:-$ROOT/data/stack}
MLFLOW_PORT=${STACK_MLFLOW_PORT:-5000}
PREFECT_PORT=${STACK_PREFECT_PORT:-4200}
SERVE_PORT=${STACK_SERVE_PORT:-3000}
PG=${STACK_POSTGRES:-postgresql://postgres@127.0.0.1:5432}
PG_HOSTPORT=${PG#*@}
PG_HOST=${PG_HOSTPORT%:*}
PG_PORT=${PG_HOSTPORT##*:}
REDIS_URL=${STACK_REDIS_URL:-redis://127.0.0.1:6379/0}
STARTUP_TIMEOUT_S=${STACK_TIMEOUT_S:-240}
SECRET_FILE=$STACK/jwt_secret
MIN_SECRET_BYTES=32 # recolab.adapters.runtime.security.MIN_SECRET_BYTES (HS256)
# start order; stop goes the other way
SERVICES=(mlflow prefect deployments serving)

MLFLOW_URL=http://127.0.0.1:$MLFLOW_PORT
PREFECT_URL=http://127.0.0.1:$PREFECT_PORT
SERVE_URL=http://127.0.0.1:$SERVE_PORT

export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 BENTOML_DO_NOT_TRACK=true
export MLFLOW_ENABLE_TELEMETRY=false GX_ANALYTICS_ENABLED=false

say() { printf '== %s\n' "$*"; }
pid_of() { cat "$STACK/pids/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_postgres() {
    if ! pg_isready -h "$PG_HOST" -p "$PG_PORT" -q; then
        say "PostgreSQL is down: starting it"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
        for _ in $(seq 30); do pg_isready -h "$PG_HOST" -p "$PG_PORT" -q && break; sleep 1; done
    fi
    pg_isready -h "$PG_HOST" -p "$PG_PORT" >/dev/null
    for db in recolab mlflow prefect; do
        if [[ -z $(psql "$PG/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
            psql "$PG/postgres" -qc "CREATE DATABASE $db" && echo "   created database $db"
        fi
    done
    echo "   PostgreSQL  $PG (databases recolab, mlflow, prefect)"
}

ensure_redis() {
    local hostport=${REDIS_URL#redis://}
    hostport=${hostport%%/*}
    if ! redis-cli -h "${hostport%:*}" -p "${hostport##*:}" ping >/dev/null 2>&1; then
        say "Redis is down: starting it"
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "${hostport##*:}" --save "" \
            --appendonly no --logfile "$STACK/logs/redis.log"
        for _ in $(seq 30); do redis-cli -p "${hostport##*:}" ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    echo "   Redis       $REDIS_URL"
}

# launch NAME PORT COMMAND...: a new session (so stop reaches its children), log, pid file
launch() {
    local name=$1 port=$2
    shift 2
    if alive "$name"; then
        echo "   $name is already running (pid $(pid_of "$name"))"
        return
    fi
    if [[ $port != - ]] && port_busy "$port"; then
        echo "error: port $port (for $name) is taken; set STACK_*_PORT or run: $0 stop" >&2
        exit 1
    fi
    setsid "$@" >"$STACK/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$STACK/pids/$name.pid"
    echo "   $name starting (pid $!, log data/stack/logs/$name.log)"
}

# wait_for NAME URL [PATTERN]: until URL answers 2xx (with PATTERN in the body, if given),
# or the process dies, or the timeout
wait_for() {
    local name=$1 url=$2 pattern=${3:-} start=$SECONDS body
    until body=$(curl -sf "$url") && [[ $body == *"$pattern"* ]]; do
        if ! alive "$name"; then
            echo "error: $name exited; the end of its log:" >&2
            tail -n 30 "$STACK/logs/$name.log" >&2
            exit 1
        fi
        if ((SECONDS - start > STARTUP_TIMEOUT_S)); then
            echo "error: $name did not answer $url within ${STARTUP_TIMEOUT_S}s" >&2
            exit 1
        fi
        sleep 1
    done
    echo "   $name is up after $((SECONDS - start))s"
}

# jwt_secret: print the stack's JWT secret, creating it on first use (random, mode 0600)
jwt_secret() {
    local tmp secret
    if [[ ! -e $SECRET_FILE ]]; then
        mkdir -p "$STACK"
        tmp=$(mktemp "$STACK/.jwt_secret.XXXXXX") # mode 0600 from the start
        head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' >"$tmp"
        mv -n "$tmp" "$SECRET_FILE" # a concurrent start's secret, if it was first, stays
        rm -f "$tmp"
    fi
    chmod 600 "$SECRET_FILE"
    secret=$(<"$SECRET_FILE")
    if ((${#secret} < MIN_SECRET_BYTES)); then
        echo "error: $SECRET_FILE holds ${#secret} bytes; a JWT secret needs at least" \
            "$MIN_SECRET_BYTES (delete the file to get a new one)" >&2
        exit 1
    fi
    printf '%s' "$secret"
}

# The settings of RecoLab's processes in the stack (and of a shell, through `env`)
RECOLAB_ENV_VARS=(RECOLAB_DATABASE_URL RECOLAB_REDIS_URL MLFLOW_TRACKING_URI PREFECT_API_URL
    RECOLAB_JWT_SECRET)
recolab_env() {
    local secret
    secret=$(jwt_secret)
    export RECOLAB_DATABASE_URL=$PG/recolab RECOLAB_REDIS_URL=$REDIS_URL
    export MLFLOW_TRACKING_URI=$MLFLOW_URL PREFECT_API_URL=$PREFECT_URL/api
    export RECOLAB_JWT_SECRET=$secret
}

print_env() {
    local name
    recolab_env
    for name in "${RECOLAB_ENV_VARS[@]}"; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done
}

start() {
    mkdir -p "$STACK/logs" "$STACK/pids" "$STACK/mlartifacts" "$STACK/prefect"
    say "databases"
    ensure_postgres
    ensure_redis

    say "MLflow tracking server (backend store: PostgreSQL database mlflow)"
    launch mlflow "$MLFLOW_PORT" "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
        --backend-store-uri "${PG/postgresql:/postgresql+psycopg:}/mlflow" \
        --artifacts-destination "$STACK/mlartifacts" --workers 1

    say "Prefect server (database: PostgreSQL database prefect)"
    PREFECT_HOME=$STACK/prefect \
        PREFECT_API_DATABASE_CONNECTION_URL="${PG/postgresql:/postgresql+asyncpg:}/prefect" \
        launch prefect "$PREFECT_PORT" "$BIN/prefect" server start --host 127.0.0.1 \
        --port "$PREFECT_PORT"

    wait_for mlflow "$MLFLOW_URL/health"
    wait_for prefect "$PREFECT_URL/api/health"

    recolab_env
    say "RecoLab deployments (recolab deploy)"
    launch deployments - "$BIN/recolab" deploy
    say "BentoML service (recolab serve)"
    launch serving "$SERVE_PORT" "$BIN/recolab" serve --host 127.0.0.1 --port "$SERVE_PORT"
    # a stopped stack leaves its deployments paused: ready once serving unpauses them
    wait_for deployments "$PREFECT_URL/api/deployments/name/pipeline/recolab" '"paused":false'
    wait_for serving "$SERVE_URL/livez"

    cat <<EOF

RecoLab stack is running (logs and pid files in data/stack/; stop it with: make stack-stop)
  Prefect UI    $PREFECT_URL  (deployments: $PREFECT_URL/deployments)
  MLflow UI     $MLFLOW_URL
  RecoLab API   $SERVE_URL  (OpenAPI page; /readyz is 503 until a champion exists)
  PostgreSQL    $PG/recolab
  Redis         $REDIS_URL

Train a first champion (or press "Run" on pipeline/recolab in the Prefect UI):
  PREFECT_API_URL=$PREFECT_URL/api $BIN/prefect deployment run pipeline/recolab -p max_epochs=3
Then ask for recommendations from a shell with the stack's settings: its URLs and its own
JWT secret (data/stack/jwt_secret), which the service checks tokens against:
  eval "\$(scripts/stack.sh env)"
  curl -s -X POST $SERVE_URL/recommend -H 'Content-Type: application/json' \\
       -H "Authorization: Bearer \$($BIN/recolab token 1)" -d '{"user_id": 1, "n": 5}'
EOF
}

stop() {
    local i name pid
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        name=${SERVICES[i]}
        pid=$(pid_of "$name")
        if [[ -z $pid ]]; then
            continue
        fi
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            if kill -0 "$pid" 2>/dev/null; then
                kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            fi
            echo "   stopped $name (pid $pid)"
        fi
        rm -f "$STACK/pids/$name.pid"
    done
    echo "   PostgreSQL and Redis are left running (shared services)"
}

status() {
    local name
    for name in "${SERVICES[@]}"; do
        if alive "$name"; then
            echo "   $name: running (pid $(pid_of "$name"))"
        else
            echo "   $name: stopped"
        fi
    done
    echo "   Prefect UI $PREFECT_URL · MLflow UI $MLFLOW_URL · RecoLab API $SERVE_URL"
    echo "   settings for a shell (URLs, JWT secret): eval \"\$(scripts/stack.sh env)\""
}

case ${1:-start} in
    start) start ;;
    stop) say "stopping the RecoLab stack" && stop ;;
    status) status ;;
    env) print_env ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
