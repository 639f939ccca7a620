# Sourced by the scripts that need a running `camstream serve` (browser-test, serve-load).
# start_server BIN SERVE-ARGS...: starts the server on a free 127.0.0.1 port with its
# log in $server_log and sets $server (its pid) and $url. The EXIT trap stops it and
# removes the log. A server that dies or names no address ends the script.
start_server() {
  local bin=$1
  shift
  server_log=$(mktemp)
  "$bin" serve --bind 127.0.0.1:0 "$@" 2>"$server_log" &
  server=$!
  trap 'kill "$server" 2>/dev/null || true; rm -f "$server_log"' EXIT
  url=""
  for _ in $(seq 1 100); do
    url=$(grep -o 'http://127.0.0.1:[0-9]*' "$server_log" | head -1 || true)
    [ -n "$url" ] && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  cat "$server_log"
  echo "$(basename "$0"): the server did not start" >&2
  exit 1
}
