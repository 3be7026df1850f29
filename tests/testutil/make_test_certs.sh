#!/usr/bin/env bash
# Makes the certificates the TLS tests use, with the openssl command, in DIR:
#   ca.pem ca.key               a CA ("attnroll test CA")
#   other-ca.pem other-ca.key   an unrelated CA ("attnroll other CA")
#   server.pem server.key       CN=localhost, SAN localhost, 127.0.0.1, ::1, from ca
#   server2.pem server2.key     the same names from other-ca (what a rotation switches to)
#   alice.pem alice.key         client certificate CN=alice from ca
#   bob.pem bob.key             client certificate CN=bob from ca
#   mallory.pem mallory.key     client certificate CN=mallory from other-ca
# P-256 keys, valid for two days. Usage: make_test_certs.sh DIR
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"
cat > openssl.cnf <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
CNF
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
ca() {  # NAME CN
  key "$1"
  openssl req -x509 -config openssl.cnf -extensions ca -key "$1.key" -subj "/CN=$2" -days 2 \
    -out "$1.pem"
}
leaf() {  # NAME CN CA KIND
  key "$1"
  openssl req -new -config openssl.cnf -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 2 -extfile openssl.cnf -extensions "$4" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}
ca ca "attnroll test CA"
ca other-ca "attnroll other CA"
leaf server localhost ca server
leaf server2 localhost other-ca server
leaf alice alice ca client
leaf bob bob ca client
leaf mallory mallory other-ca client
