#!/usr/bin/env bash
# A network-HSM stand-in: a throwaway SoftHSM2 token in DIR (as new-token.sh makes it) served
# by `p11-kit server` on a Unix socket (DIR/p11kit.sock), and the environment that makes p11ca
# reach it through p11-kit-client.so.
#
#   eval "$(softhsm/p11kit-token.sh DIR [LABEL] [USER_PIN] [SO_PIN])"
#   softhsm/p11kit-token.sh --stop DIR      # the server goes away (the token stays in DIR)
#   softhsm/p11kit-token.sh --start DIR     # serve the same token again on the same socket
#
# The server runs in its own process group (setsid) and --stop ends that group: with the
# server gone every client call fails, as when a network HSM drops off the network. With
# P11CA_BACKEND_LIFETIME=SECONDS the server also ends by itself after that long.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
provider=${P11CA_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
client=${P11CA_P11KIT_CLIENT:-/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so}

alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

stop() {
  local dir=$1 pid
  [ -f "$dir/p11kit.pid" ] || return 0
  pid=$(cat "$dir/p11kit.pid")
  if alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then
      echo "p11kit-token.sh: p11-kit server (pid $pid) did not stop on SIGTERM" >&2
      return 1
    fi
  fi
  rm -f "$dir/p11kit.pid" "$dir/p11kit.sock"
}

start() {
  local dir=$1 label
  label=$(cat "$dir/p11kit.label")
  stop "$dir"
  local lifetime=()
  [ -n "${P11CA_BACKEND_LIFETIME:-}" ] && lifetime=(timeout "$P11CA_BACKEND_LIFETIME")
  SOFTHSM2_CONF="$dir/softhsm2.conf" setsid "${lifetime[@]}" p11-kit server -f \
    -n "$dir/p11kit.sock" --provider "$provider" "pkcs11:token=$label" \
    </dev/null >"$dir/p11kit.out" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/p11kit.pid"
  for _ in $(seq 100); do
    [ -S "$dir/p11kit.sock" ] && return 0
    alive "$pid" || break
    sleep 0.05
  done
  echo "p11kit-token.sh: p11-kit server did not start: $(cat "$dir/p11kit.out")" >&2
  stop "$dir" || true
  return 1
}

case "${1:-}" in
  --stop)
    stop "${2:?usage: p11kit-token.sh --stop DIR}"
    exit
    ;;
  --start)
    start "${2:?usage: p11kit-token.sh --start DIR}"
    exit
    ;;
esac

dir=${1:?usage: p11kit-token.sh DIR [LABEL] [USER_PIN] [SO_PIN] | --stop DIR | --start DIR}
label=${2:-p11ca-p11kit}
pin=${3:-1234}
so_pin=${4:-12345678}
command -v p11-kit >/dev/null && [ -e "$client" ] || {
  echo "p11kit-token.sh: p11-kit or $client is not installed; run ci/setup (p11-kit)" >&2
  exit 1
}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
"$here/new-token.sh" "$dir" "$label" "$pin" "$so_pin" >/dev/null
echo "$label" > "$dir/p11kit.label"
start "$dir"
cat <<ENV
export P11CA_MODULE='$client'
export P11CA_TOKEN='$label'
export P11CA_PIN='$pin'
export P11_KIT_SERVER_ADDRESS='unix:path=$dir/p11kit.sock'
ENV
