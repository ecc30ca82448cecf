#!/bin/sh
# Makes a self-signed certificate for local HTTPS (seed 004's generate_ssl_certs.sh): ssl/cert.pem and ssl/key.pem,
# valid for localhost and 127.0.0.1 for 365 days. Needs openssl. Browsers warn about self-signed certificates;
# use a certificate from a real CA in production.
#
#   ./generate_ssl_certs.sh            -> ./ssl/cert.pem, ./ssl/key.pem
#   ./generate_ssl_certs.sh certs 30   -> ./certs/..., valid 30 days
#
# Then: kiln serve --tls-cert ssl/cert.pem --tls-key ssl/key.pem   (or ./init_https.sh)
set -eu

dir=${1:-ssl}
days=${2:-365}
case $days in '' | *[!0-9]*) echo "error: days must be a whole number (got \"$days\")" >&2; exit 2 ;; esac
command -v openssl >/dev/null 2>&1 || { echo "error: openssl is not installed" >&2; exit 1; }

mkdir -p "$dir"
if [ -e "$dir/key.pem" ] || [ -e "$dir/cert.pem" ]; then
  echo "$dir/cert.pem or $dir/key.pem exists already; remove them first to make new ones." >&2
  exit 1
fi
config=$(mktemp)
trap 'rm -f "$config"' EXIT INT TERM
# subjectAltName through a config file: older openssl versions lack -addext.
cat >"$config" <<CONF
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = localhost
[ext]
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
CONF
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" -keyout "$dir/key.pem" -out "$dir/cert.pem" -config "$config" 2>/dev/null
chmod 644 "$dir/cert.pem"
echo "Wrote $dir/cert.pem and $dir/key.pem (self-signed for localhost, $days days). Keep key.pem private."
echo "Start Kiln with HTTPS: kiln serve --tls-cert $dir/cert.pem --tls-key $dir/key.pem"
