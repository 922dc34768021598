#!/usr/bin/env bash
# Create a throwaway SoftHSM2 token in DIR and print the environment that selects it.
#
#   eval "$(softhsm/new-token.sh DIR [LABEL] [USER_PIN] [SO_PIN])"
#
# DIR gets softhsm2.conf and tokens/. Nothing outside DIR is touched, so tests can each have
# their own token and run in parallel. The PINs default to throwaway values: use this for tests
# and demos only, never for a real CA.
set -euo pipefail
dir=${1:?usage: new-token.sh DIR [LABEL] [USER_PIN] [SO_PIN]}
label=${2:-p11ca-demo}
pin=${3:-1234}
so_pin=${4:-12345678}
here=$(cd "$(dirname "$0")" && pwd)
module=${P11CA_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
if ! command -v softhsm2-util >/dev/null || [ ! -e "$module" ]; then
  echo "new-token.sh: SoftHSM2 is not installed (softhsm2-util / $module); run ci/setup or apt-get install softhsm2" >&2
  exit 1
fi
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.in" > "$dir/softhsm2.conf"
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" \
  --pin "$pin" --so-pin "$so_pin" >/dev/null
cat <<ENV
export SOFTHSM2_CONF='$dir/softhsm2.conf'
export P11CA_MODULE='$module'
export P11CA_TOKEN='$label'
export P11CA_PIN='$pin'
ENV
