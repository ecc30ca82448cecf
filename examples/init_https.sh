#!/bin/sh
# Starts `kiln serve` over HTTP or HTTPS, asking which (seed 004's init_https.sh):
#   1) HTTP (default)
#   2) HTTPS with a self-signed certificate (made by generate_ssl_certs.sh in ./ssl unless it exists)
#   3) HTTPS with your own certificate and key (PEM files)
# Without a terminal, or to script it, set KILN_HTTPS_MODE=http|self-signed|custom (custom also needs
# KILN_TLS_CERT and KILN_TLS_KEY, which kiln serve reads itself). Arguments after the script name go to
# kiln serve (e.g. --model, --port). KILN (default: kiln) is the command that runs Kiln, e.g. "node bin/kiln.js".
set -eu

here=$(cd "$(dirname "$0")" && pwd)
kiln=${KILN:-kiln}
mode=${KILN_HTTPS_MODE:-}

if [ -z "$mode" ]; then
  if [ -t 0 ]; then
    echo "How should Kiln serve?"
    echo "  1) HTTP (default)"
    echo "  2) HTTPS with a self-signed certificate"
    echo "  3) HTTPS with your own certificate"
    printf 'Choice [1]: '
    read -r choice || choice=1
    case ${choice:-1} in 1) mode=http ;; 2) mode=self-signed ;; 3) mode=custom ;; *) echo "error: choose 1, 2 or 3" >&2; exit 2 ;; esac
  else
    mode=http
  fi
fi

case $mode in
  http)
    echo "Starting Kiln over HTTP" >&2
    # shellcheck disable=SC2086 # KILN may be a command with arguments
    exec $kiln serve "$@"
    ;;
  self-signed)
    dir=${KILN_SSL_DIR:-ssl}
    if [ ! -f "$dir/cert.pem" ] || [ ! -f "$dir/key.pem" ]; then
      "$here/generate_ssl_certs.sh" "$dir" >&2
    fi
    echo "Starting Kiln over HTTPS with the self-signed certificate in $dir/ (browsers will warn)" >&2
    # shellcheck disable=SC2086
    exec $kiln serve --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" "$@"
    ;;
  custom)
    cert=${KILN_TLS_CERT:-}
    key=${KILN_TLS_KEY:-}
    if [ -t 0 ] && [ -z "$cert" ]; then printf 'Certificate file (PEM): '; read -r cert; fi
    if [ -t 0 ] && [ -z "$key" ]; then printf 'Private key file (PEM): '; read -r key; fi
    for f in "$cert" "$key"; do
      [ -n "$f" ] && [ -f "$f" ] || { echo "error: certificate or key file not found: \"$f\" (set KILN_TLS_CERT and KILN_TLS_KEY)" >&2; exit 1; }
    done
    echo "Starting Kiln over HTTPS with $cert" >&2
    # shellcheck disable=SC2086
    exec $kiln serve --tls-cert "$cert" --tls-key "$key" "$@"
    ;;
  *)
    echo "error: KILN_HTTPS_MODE must be http, self-signed or custom (got \"$mode\")" >&2
    exit 2
    ;;
esac
