#!/bin/sh
# Generate one image with a running `kiln serve` and save it as a PNG: the helper seed 002's README calls.
# POSIX sh; needs curl and base64 (or openssl); no jq.
#
#   ./save_image.sh "a cute robot"                          -> generated_<time>.png, 20 steps, 512x512
#   ./save_image.sh "a cute robot" my_robot.png
#   ./save_image.sh "a sunset landscape" sunset.png 30 256  -> 30 steps, 256x256
#
# Environment: KILN_URL (default http://localhost:7860), KILN_API_KEY (sent as X-API-Key when the server has keys).
# It posts seed 002's request to POST /generate and decodes the PNG data URL of the answer.
set -eu

usage() {
  echo "usage: $0 \"prompt\" [output.png] [steps] [size]" >&2
  exit 2
}

[ $# -ge 1 ] && [ -n "$1" ] || usage
prompt=$1
out=${2:-generated_$(date +%Y%m%d_%H%M%S).png}
steps=${3:-20}
size=${4:-512}
url=${KILN_URL:-http://localhost:7860}
url=${url%/}

for n in "$steps" "$size"; do
  case $n in '' | *[!0-9]*) echo "error: steps and size must be whole numbers (got \"$n\")" >&2; usage ;; esac
done

# JSON string escaping: backslash and quote escaped, tabs as \t, line breaks as \n, other control characters dropped.
tab=$(printf '\t')
escaped=$(printf '%s' "$prompt" | tr -d '\000-\010\013-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e "s/$tab/\\\\t/g" | awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }')
body="{\"prompt\": \"$escaped\", \"steps\": $steps, \"width\": $size, \"height\": $size}"

response=$(mktemp)
trap 'rm -f "$response" "$response.b64"' EXIT INT TERM

echo "Generating \"$prompt\" ($steps steps, ${size}x${size}) with $url ..." >&2
started=$(date +%s)
if [ -n "${KILN_API_KEY:-}" ]; then
  status=$(curl -sS -o "$response" -w '%{http_code}' -X POST "$url/generate" -H 'Content-Type: application/json' -H "X-API-Key: $KILN_API_KEY" --data-binary "$body") || {
    echo "error: cannot reach $url (is kiln serve running? set KILN_URL)" >&2
    exit 1
  }
else
  status=$(curl -sS -o "$response" -w '%{http_code}' -X POST "$url/generate" -H 'Content-Type: application/json' --data-binary "$body") || {
    echo "error: cannot reach $url (is kiln serve running? set KILN_URL)" >&2
    exit 1
  }
fi

if [ "$status" != 200 ]; then
  echo "error: the server answered HTTP $status:" >&2
  head -c 2000 "$response" >&2
  echo >&2
  exit 1
fi

sed -n 's/.*"image":"data:image\/png;base64,\([^"]*\)".*/\1/p' "$response" >"$response.b64"
if [ ! -s "$response.b64" ]; then
  echo "error: no image in the answer:" >&2
  head -c 2000 "$response" >&2
  echo >&2
  exit 1
fi
if command -v base64 >/dev/null 2>&1; then
  base64 -d <"$response.b64" >"$out"
else
  openssl base64 -d -A <"$response.b64" >"$out"
fi

seed=$(sed -n 's/.*"seed":\([0-9]*\).*/\1/p' "$response")
echo "Saved $out ($(wc -c <"$out" | tr -d ' ') bytes, seed $seed) in $(($(date +%s) - started)) s" >&2
