#!/usr/bin/env bash
# Create a throwaway kryoptic token (the Rust soft token from crates.io) in DIR and print the
# environment that selects it; --stop removes nothing and only exists for symmetry with the
# other back-ends (kryoptic runs inside the process that loads it; there is no service).
#
#   eval "$(softhsm/kryoptic-token.sh DIR [LABEL] [USER_PIN] [SO_PIN])"
#   softhsm/kryoptic-token.sh --stop DIR
#
# The module is $P11CA_KRYOPTIC_MODULE, else what ci/kryoptic builds (once, into a cache
# outside the repository). DIR gets kryoptic.toml (one [[slots]] entry, sqlite storage in
# DIR/token.sql) and KRYOPTIC_CONF points at it.
set -euo pipefail
if [ "${1:-}" = "--stop" ]; then
  : "${2:?usage: kryoptic-token.sh --stop DIR}"
  exit 0
fi
dir=${1:?usage: kryoptic-token.sh DIR [LABEL] [USER_PIN] [SO_PIN] | --stop DIR}
label=${2:-p11ca-kryoptic}
pin=${3:-1234}
so_pin=${4:-12345678}
here=$(cd "$(dirname "$0")" && pwd)
module=${P11CA_KRYOPTIC_MODULE:-}
[ -n "$module" ] || module=$("$here/../ci/kryoptic")
[ -e "$module" ] || {
  echo "kryoptic-token.sh: $module is missing; build it with ci/kryoptic" >&2
  exit 1
}
command -v pkcs11-tool >/dev/null || {
  echo "kryoptic-token.sh: pkcs11-tool is not installed; run ci/setup (opensc)" >&2
  exit 1
}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rm -f "$dir/token.sql"
cat > "$dir/kryoptic.toml" <<TOML
[[slots]]
slot = 1
dbtype = "sqlite"
dbargs = "$dir/token.sql"
TOML
export KRYOPTIC_CONF=$dir/kryoptic.toml
if ! out=$(pkcs11-tool --module "$module" --slot-index 0 --init-token --label "$label" \
  --so-pin "$so_pin" 2>&1) ||
  ! out=$(pkcs11-tool --module "$module" --token-label "$label" --login --login-type so \
    --so-pin "$so_pin" --init-pin --pin "$pin" 2>&1); then
  echo "kryoptic-token.sh: could not create token \"$label\": $out" >&2
  exit 1
fi
cat <<ENV
export P11CA_MODULE='$module'
export P11CA_TOKEN='$label'
export P11CA_PIN='$pin'
export KRYOPTIC_CONF='$dir/kryoptic.toml'
ENV
