#!/usr/bin/env bash
# Start a throwaway software TPM (swtpm) in DIR, make a tpm2-pkcs11 token on it, and print the
# environment that selects it; --stop shuts that TPM down cleanly.
#
#   eval "$(softhsm/tpm-token.sh DIR [LABEL] [USER_PIN] [SO_PIN])"
#   softhsm/tpm-token.sh --stop DIR
#
# What runs, all private to DIR: swtpm on 127.0.0.1 (a free port, the control channel on the
# next one), a D-Bus session bus (DIR/bus.sock) and tpm2-abrmd, the TPM resource manager, on
# it. tpm2-pkcs11 reaches the TPM through abrmd (TPM2_PKCS11_TCTI=tabrmd:bus_type=session), as
# it would through /dev/tpmrm0 on a real machine: tpm2-pkcs11 leaves transient objects loaded
# in some paths (C_DestroyObject of a loaded key, a run without login), and without a resource
# manager to flush them when a process ends, the TPM's three object slots fill up and every
# later login fails ("out of memory for object contexts"). The token's store is DIR/store.
#
# Every start uses a fresh TPM state (DIR/state is wiped), so dictionary-attack counters from
# an earlier run never carry over. Stopping ends abrmd, then sends TPM2_Shutdown and
# `swtpm_ioctl -s`: a plain kill of swtpm counts as a failed authorization, and three put the
# TPM in lockout (CKR_PIN_LOCKED). With P11CA_BACKEND_LIFETIME=SECONDS every process also ends
# by itself after that long (tests set it, so a crashed test run leaves nothing behind).
set -euo pipefail
module=${P11CA_TPM2_MODULE:-/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so}

alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# Wait up to 5 s for pid $1 to end.
gone() {
  for _ in $(seq 100); do alive "$1" || return 0; sleep 0.05; done
  return 1
}

# End the process whose pid is in file $1 with SIGTERM (abrmd, dbus-daemon: no TPM state).
term() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    gone "$pid" || { echo "tpm-token.sh: pid $pid ($1) did not stop" >&2; return 1; }
  fi
  rm -f "$1"
}

stop() {
  local dir=$1 pid port
  term "$dir/abrmd.pid"
  if [ -f "$dir/swtpm.pid" ]; then
    pid=$(cat "$dir/swtpm.pid")
    port=$(cat "$dir/swtpm.port" 2>/dev/null || true)
    if alive "$pid"; then
      # abrmd is gone, so the TPM port is free: TPM2_Shutdown(CLEAR) first, so the TPM
      # records an orderly shutdown, then end swtpm through its control channel.
      if [ -n "$port" ]; then
        tpm2_shutdown -T "swtpm:host=127.0.0.1,port=$port" 2>/dev/null || true
        swtpm_ioctl --tcp "127.0.0.1:$((port + 1))" -s 2>/dev/null || true
      fi
      gone "$pid" || {
        echo "tpm-token.sh: swtpm (pid $pid) did not stop on swtpm_ioctl -s" >&2
        return 1
      }
    fi
    rm -f "$dir/swtpm.pid"
  fi
  term "$dir/bus.pid"
  rm -f "$dir/bus.sock"
}

if [ "${1:-}" = "--stop" ]; then
  stop "${2:?usage: tpm-token.sh --stop DIR}"
  exit
fi

dir=${1:?usage: tpm-token.sh DIR [LABEL] [USER_PIN] [SO_PIN] | --stop DIR}
label=${2:-p11ca-tpm}
pin=${3:-1234}
so_pin=${4:-12345678}
for c in swtpm swtpm_ioctl tpm2_shutdown tpm2_getcap tpm2-abrmd dbus-daemon pkcs11-tool; do
  command -v "$c" >/dev/null || {
    echo "tpm-token.sh: $c is not installed; run ci/setup (swtpm swtpm-tools tpm2-tools tpm2-abrmd dbus-daemon opensc)" >&2
    exit 1
  }
done
[ -e "$module" ] || {
  echo "tpm-token.sh: $module is missing; run ci/setup (libtpm2-pkcs11-1)" >&2
  exit 1
}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
stop "$dir"
rm -rf "$dir/state" "$dir/store"
mkdir -p "$dir/state" "$dir/store"
trap 'stop "$dir" || true' ERR

lifetime=()
[ -n "${P11CA_BACKEND_LIFETIME:-}" ] && lifetime=(timeout "$P11CA_BACKEND_LIFETIME")
# Each service in its own session (setsid), so signals meant for the caller's process group
# never reach the TPM.
started=""
for _ in $(seq 20); do
  port=$((20000 + RANDOM % 40000))
  setsid "${lifetime[@]}" swtpm socket --tpm2 \
    --tpmstate "dir=$dir/state" \
    --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
    --flags not-need-init,startup-clear \
    --log "file=$dir/swtpm.log" </dev/null >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    alive "$pid" || break
    if swtpm_ioctl --tcp "127.0.0.1:$((port + 1))" -g >/dev/null 2>&1; then
      started=1
      break
    fi
    sleep 0.05
  done
  if [ -n "$started" ]; then
    echo "$pid" > "$dir/swtpm.pid"
    echo "$port" > "$dir/swtpm.port"
    break
  fi
  # Never answered (port taken?): a TPM with no state worth keeping, so a plain kill is fine.
  alive "$pid" && kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
done
[ -n "$started" ] || {
  echo "tpm-token.sh: swtpm did not start in $dir: $(tail -n 3 "$dir/swtpm.log" 2>/dev/null)" >&2
  false
}

bus="unix:path=$dir/bus.sock"
setsid "${lifetime[@]}" dbus-daemon --session --nofork --nopidfile --address="$bus" \
  </dev/null >"$dir/bus.log" 2>&1 &
echo $! > "$dir/bus.pid"
for _ in $(seq 100); do [ -S "$dir/bus.sock" ] && break; sleep 0.05; done
[ -S "$dir/bus.sock" ] || { echo "tpm-token.sh: dbus-daemon did not start: $(cat "$dir/bus.log")" >&2; false; }

export DBUS_SESSION_BUS_ADDRESS=$bus
tcti="tabrmd:bus_type=session"
setsid "${lifetime[@]}" tpm2-abrmd --session --allow-root --flush-all \
  --tcti="swtpm:host=127.0.0.1,port=$port" </dev/null >"$dir/abrmd.log" 2>&1 &
echo $! > "$dir/abrmd.pid"
ready=""
for _ in $(seq 100); do
  if tpm2_getcap -T "$tcti" properties-fixed >/dev/null 2>&1; then ready=1; break; fi
  alive "$(cat "$dir/abrmd.pid")" || break
  sleep 0.05
done
[ -n "$ready" ] || { echo "tpm-token.sh: tpm2-abrmd did not start: $(cat "$dir/abrmd.log")" >&2; false; }

export TPM2_PKCS11_TCTI=$tcti TPM2_PKCS11_STORE=$dir/store TPM2_PKCS11_LOG_LEVEL=0 TSS2_LOG=all+none
if ! out=$(pkcs11-tool --module "$module" --slot-index 0 --init-token --label "$label" \
  --so-pin "$so_pin" 2>&1) ||
  ! out=$(pkcs11-tool --module "$module" --token-label "$label" --login --login-type so \
    --so-pin "$so_pin" --init-pin --pin "$pin" 2>&1); then
  echo "tpm-token.sh: could not create token \"$label\": $out" >&2
  false
fi
trap - ERR
cat <<ENV
export P11CA_MODULE='$module'
export P11CA_TOKEN='$label'
export P11CA_PIN='$pin'
export TPM2_PKCS11_TCTI='$tcti'
export TPM2_PKCS11_STORE='$dir/store'
export TPM2_PKCS11_LOG_LEVEL='0'
export TSS2_LOG='all+none'
export DBUS_SESSION_BUS_ADDRESS='$bus'
ENV
