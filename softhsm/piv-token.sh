#!/usr/bin/env bash
# Plug an emulated YubiKey 5 PIV card (firmware 5.2.7) into a private pcscd and print the
# environment that selects it through Yubico's real ykcs11 module; --stop ends everything it
# started, --unplug / --plug stop and restart the card alone (its keys stay in DIR/card).
#
#   eval "$(softhsm/piv-token.sh DIR [LABEL] [USER_PIN] [PUK])"
#   softhsm/piv-token.sh --unplug DIR | --plug DIR | --stop DIR
#
# What runs, all private to DIR:
# - pcscd in its own mount and network namespaces (`unshare -m -n`): a tmpfs over /run gives it
#   its own /run/pcscd/pcscd.comm, since pcscd ignores PCSCLITE_CSOCK_NAME and would otherwise
#   take the system's socket; clients reach it as PCSCLITE_CSOCK_NAME=/proc/PID/root/run/...
#   Its reader configuration (-c DIR/reader.conf.d) loads vsmartcard's vpcd driver as
#   "Yubico YubiKey vpcd": ykcs11 2.2.0 only uses readers whose name starts with "Yubico".
#   vpcd listens on 0.0.0.0 (hard-coded); in the private network namespace that is no one's.
# - the card, p11ca-piv-emulator ($P11CA_PIV_EMULATOR, built with --features piv-emulator), in
#   the same network namespace, connected to vpcd's port.
# A new card is then set up with Yubico's own yubico-piv-tool, as one would a new YubiKey:
# PIN, PUK and a random management key replace the factory ones. LABEL is ignored: ykcs11
# names the token "YubiKey PIV #<serial>". The management key (48 hex digits, the SO "PIN" for
# ykcs11) is written to DIR/mgm-key (mode 0600) for `--so-pin-source file:...`.
# The PIN, PUK and management key of this throwaway card pass through yubico-piv-tool's argv.
# With P11CA_BACKEND_LIFETIME=SECONDS every process also ends by itself after that long.
set -euo pipefail
module=${P11CA_YKCS11_MODULE:-/usr/lib/x86_64-linux-gnu/libykcs11.so}
vpcd=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
port=35963
serial=12345678

alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# End the process whose pid is in file $1 (SIGTERM, up to 5 s).
term() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && { echo "piv-token.sh: pid $pid ($1) did not stop" >&2; return 1; }
  fi
  rm -f "$1"
}

stop() {
  term "$1/emulator.pid"
  term "$1/pcscd.pid"
}

lifetime=()
[ -n "${P11CA_BACKEND_LIFETIME:-}" ] && lifetime=(timeout "$P11CA_BACKEND_LIFETIME")

sock() { echo "/proc/$(cat "$1/pcscd.pid")/root/run/pcscd/pcscd.comm"; }

# Start the card and wait up to $2 tenths of a second until PC/SC sees it.
insert() {
  local dir=$1 pid
  pid=$(cat "$dir/pcscd.pid")
  alive "$pid" || { echo "piv-token.sh: pcscd is not running for $dir" >&2; return 1; }
  mkdir -p "$dir/card"
  setsid "${lifetime[@]}" sh -c 'echo $$ > "$1"; shift; exec "$@"' sh "$dir/emulator.pid" \
    nsenter --net="/proc/$pid/ns/net" "$emulator" --port "$port" --state "$dir/card" \
    --serial "$serial" </dev/null >>"$dir/emulator.log" 2>&1 &
  for _ in $(seq "$2"); do
    if PCSCLITE_CSOCK_NAME=$(sock "$dir") yubico-piv-tool -a version >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Put the card in the reader. After a removal, vpcd 0.8 in pcscd sometimes takes the new
# connection but never polls it (seen: every other re-plug, the reader stays empty while the
# emulator waits); taking the card out and in again once more always worked, so up to 3 tries.
plug() {
  local dir=$1
  for _ in 1 2 3; do
    insert "$dir" 100 && return 0
    term "$dir/emulator.pid"
  done
  echo "piv-token.sh: the emulated card did not show up: $(tail -n 3 "$dir/emulator.log" "$dir/pcscd.log")" >&2
  return 1
}

emulator=${P11CA_PIV_EMULATOR:-}
case "${1:-}" in
  --stop) stop "${2:?usage: piv-token.sh --stop DIR}"; exit ;;
  --unplug) term "${2:?usage: piv-token.sh --unplug DIR}/emulator.pid"; exit ;;
  --plug)
    [ -x "$emulator" ] || { echo "piv-token.sh: set P11CA_PIV_EMULATOR to the p11ca-piv-emulator binary" >&2; exit 1; }
    plug "${2:?usage: piv-token.sh --plug DIR}"
    exit ;;
esac

dir=${1:?usage: piv-token.sh DIR [LABEL] [USER_PIN] [PUK] | --stop DIR | --unplug DIR | --plug DIR}
pin=${3:-654321}
puk=${4:-87654321}
for c in pcscd unshare nsenter ip yubico-piv-tool pkcs11-tool od; do
  command -v "$c" >/dev/null || {
    echo "piv-token.sh: $c is not installed; run ci/setup (pcscd vsmartcard-vpcd ykcs11 yubico-piv-tool opensc)" >&2
    exit 1
  }
done
for f in "$module" "$vpcd"; do
  [ -e "$f" ] || { echo "piv-token.sh: $f is missing; run ci/setup (ykcs11 vsmartcard-vpcd)" >&2; exit 1; }
done
[ -x "$emulator" ] || {
  echo "piv-token.sh: set P11CA_PIV_EMULATOR to the p11ca-piv-emulator binary (cargo build --features piv-emulator)" >&2
  exit 1
}
[ ${#pin} -ge 6 ] && [ ${#pin} -le 8 ] && [ ${#puk} -ge 6 ] && [ ${#puk} -le 8 ] || {
  echo "piv-token.sh: a PIV PIN and PUK have 6 to 8 characters" >&2
  exit 1
}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
stop "$dir"
rm -rf "$dir/card" "$dir/reader.conf.d"
mkdir -p "$dir/reader.conf.d"
cat > "$dir/reader.conf.d/vpcd" <<CONF
FRIENDLYNAME "Yubico YubiKey vpcd"
DEVICENAME   /dev/null:$port
LIBPATH      $vpcd
CHANNELID    $port
CONF
trap 'stop "$dir" || true' ERR
setsid "${lifetime[@]}" unshare -m -n --propagation private sh -c \
  'echo $$ > "$1/pcscd.pid" && ip link set lo up && mount -t tmpfs tmpfs /run &&
   exec pcscd -f -c "$1/reader.conf.d"' sh "$dir" </dev/null >"$dir/pcscd.log" 2>&1 &
for _ in $(seq 100); do
  [ -f "$dir/pcscd.pid" ] && [ -S "$(sock "$dir")" ] && break
  sleep 0.05
done
[ -f "$dir/pcscd.pid" ] && [ -S "$(sock "$dir")" ] || {
  echo "piv-token.sh: pcscd did not start: $(tail -n 5 "$dir/pcscd.log")" >&2
  false
}
plug "$dir"
export PCSCLITE_CSOCK_NAME
PCSCLITE_CSOCK_NAME=$(sock "$dir")
mgm=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
if ! out=$( { yubico-piv-tool -a change-pin -P 123456 -N "$pin" &&
  yubico-piv-tool -a change-puk -P 12345678 -N "$puk" &&
  yubico-piv-tool -a set-mgm-key -n "$mgm"; } 2>&1); then
  echo "piv-token.sh: could not set up the card: $out" >&2
  false
fi
(umask 077 && printf '%s\n' "$mgm" > "$dir/mgm-key")
trap - ERR
cat <<ENV
export P11CA_MODULE='$module'
export P11CA_TOKEN='YubiKey PIV #$serial'
export P11CA_PIN='$pin'
export P11CA_PIV_MGM_KEY_FILE='$dir/mgm-key'
export PCSCLITE_CSOCK_NAME='$PCSCLITE_CSOCK_NAME'
ENV
