# Make sure PostgreSQL and Redis answer on this machine, starting (or installing, as root
# on Debian) them when they do not. Sourced by scripts/test.sh.

wait_for() {  # $1: description, $2...: command that succeeds once the service is up
  local what="$1"; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "!! $what did not come up" >&2
  return 1
}

ensure_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo ">> installing PostgreSQL"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo ">> starting PostgreSQL"
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      version="$(ls /etc/postgresql | sort -n | tail -n 1)"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    wait_for "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
  fi
  # The suite connects as the current user over the local socket unless DATABASE_URL says otherwise.
  if [ -z "${DATABASE_URL:-}" ] && ! psql -d postgres -Atqc "select 1" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo ">> creating PostgreSQL role $(whoami)"
    runuser -u postgres -- createuser --superuser "$(whoami)"
  fi
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo ">> installing Redis"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo ">> starting Redis"
    mkdir -p /tmp/spcanet-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/spcanet-redis --logfile /tmp/spcanet-redis/redis.log
    wait_for "Redis" redis-cli -h 127.0.0.1 -p 6379 ping
  fi
}
