#!/usr/bin/env bash
# Throw-away certificates for a local TLS cluster (testing only: the CA key is left on disk).
#
#   examples/tls/make-certs.sh [DIR] [NODES] [CLIENTS]
#
# DIR (default ./certs) gets ca.pem/ca.key, then <node>.pem/<node>.key for each node in NODES
# (default "node1 node2 node3"; each valid for localhost and 127.0.0.1, for serving and for
# dialing other nodes) and for each client in CLIENTS (default "admin"; a client certificate
# whose common name is the client's name). One CA signs everything, so it serves as both
# --tls-client-ca and --peer-ca. Needs the openssl command.
set -euo pipefail
DIR=${1:-certs}
NODES=${2:-node1 node2 node3}
CLIENTS=${3:-admin}
DAYS=${DAYS:-30}
mkdir -p "$DIR"
cd "$DIR"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$DAYS" \
  -keyout ca.key -out ca.pem -subj "/CN=raftwasm test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null

leaf() { # name, extended key usages, subjectAltName (may be empty)
  local name=$1 eku=$2 san=$3 ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
    -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$DAYS" \
    -extfile "$ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

for n in $NODES; do leaf "$n" "serverAuth,clientAuth" "DNS:localhost,IP:127.0.0.1"; done
for c in $CLIENTS; do leaf "$c" "clientAuth" ""; done
rm -f ca.srl
echo "wrote $(ls | tr '\n' ' ')to $PWD"
