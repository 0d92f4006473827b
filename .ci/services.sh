#!/usr/bin/env bash
# Start the services the test suite talks to (PostgreSQL and MariaDB on 127.0.0.1), installing them
# from Debian's packages when the machine has none, and create the `test` databases.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
# The console's browser tests drive Debian's chromium (Playwright with executable_path); a CJK font
# makes their screenshots readable.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -d /usr/share/fonts/truetype/wqy ] || need_apt+=(fonts-wqy-microhei)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "services: installing ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# matplotlib keeps its own list of fonts: one made before the CJK font came would draw 中文 as boxes
mpl_cache="${MPLCONFIGDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/matplotlib}"
if [ -d /usr/share/fonts/truetype/wqy ] && ls "$mpl_cache"/fontlist-*.json >/dev/null 2>&1 \
   && ! grep -qs "WenQuanYi" "$mpl_cache"/fontlist-*.json; then
  rm -f "$mpl_cache"/fontlist-*.json
fi

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_up; then
  echo "services: starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "services: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
  as_root su postgres -c "psql -c \"ALTER USER postgres PASSWORD NULL\"" >/dev/null 2>&1 || true
  as_root su postgres -c "createdb test" >/dev/null 2>&1 || true
fi

maria_up() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'select 1' >/dev/null 2>&1; }
if ! maria_up; then
  echo "services: starting MariaDB"
  as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 30); do maria_up && break; sleep 1; done
fi
if ! maria_up; then
  # A fresh Debian install lets root in through the socket only.
  as_root mariadb -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;" >/dev/null 2>&1 || true
fi
maria_up || { echo "services: MariaDB did not answer on 127.0.0.1:3306 as root" >&2; exit 1; }
mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null
echo "services: PostgreSQL and MariaDB are up"
