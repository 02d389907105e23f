#!/usr/bin/env bash
# make-pki.sh DIR [HOSTNAME...]: a throw-away X.509 PKI for NBD over TLS.
#
# Writes, with certtool (gnutls-bin), the files libnbd, qemu-nbd, nbdkit and
# nbdfs expect in a --tls-certificates / tls-creds-x509 directory:
#   DIR/ca-cert.pem  DIR/ca-key.pem          the CA (keep ca-key.pem private)
#   DIR/server-cert.pem DIR/server-key.pem   for the server; SANs: localhost,
#                                            127.0.0.1, ::1 and each HOSTNAME
#   DIR/client-cert.pem DIR/client-key.pem   for the client (TLS client auth)
# and, for tests: DIR/wrong/ with the same file names from a second,
# unrelated CA nobody trusts, and DIR/expired/ with a server certificate from
# the right CA that expired in 2001, and DIR/selfsigned/ with a self-signed
# server certificate.
#
# The keys are for tests and demos: never commit them, never reuse them.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  echo "usage: $0 DIR [HOSTNAME...]   (certtool from gnutls-bin)" >&2
  exit 2
fi
command -v certtool >/dev/null ||
  { echo "$0: certtool not found: apt-get install gnutls-bin" >&2; exit 1; }

dir=$1; shift
names=(localhost "$@")
mkdir -p "$dir"
umask 077

# make_pki DIR CA-NAME: one CA with a server and a client certificate.
make_pki() {
  local d=$1 caname=$2 t
  mkdir -p "$d"
  t=$(mktemp -d)
  # certtool is chatty on stderr; keep it unless it fails.
  {
    cat > "$t/ca.info" <<CA
cn = $caname
ca
cert_signing_key
expiration_days = 3650
CA
    certtool --generate-privkey --key-type=ecdsa --outfile "$d/ca-key.pem"
    certtool --generate-self-signed --load-privkey "$d/ca-key.pem" \
      --template "$t/ca.info" --outfile "$d/ca-cert.pem"

    {
      echo "organization = nbdfs test"
      echo "cn = ${names[0]}"
      local n
      for n in "${names[@]}"; do echo "dns_name = $n"; done
      echo "ip_address = 127.0.0.1"
      echo "ip_address = ::1"
      echo "tls_www_server"
      echo "encryption_key"
      echo "signing_key"
      echo "expiration_days = 3650"
    } > "$t/server.info"
    certtool --generate-privkey --key-type=ecdsa --outfile "$d/server-key.pem"
    certtool --generate-certificate --load-privkey "$d/server-key.pem" \
      --load-ca-certificate "$d/ca-cert.pem" --load-ca-privkey "$d/ca-key.pem" \
      --template "$t/server.info" --outfile "$d/server-cert.pem"

    cat > "$t/client.info" <<CL
organization = nbdfs test
cn = nbdfs client
tls_www_client
encryption_key
signing_key
expiration_days = 3650
CL
    certtool --generate-privkey --key-type=ecdsa --outfile "$d/client-key.pem"
    certtool --generate-certificate --load-privkey "$d/client-key.pem" \
      --load-ca-certificate "$d/ca-cert.pem" --load-ca-privkey "$d/ca-key.pem" \
      --template "$t/client.info" --outfile "$d/client-cert.pem"
  } > "$t/log" 2>&1 || { cat "$t/log" >&2; rm -rf "$t"; return 1; }
  rm -rf "$t"
  # Servers run as the same user in tests; qemu-nbd wants to read them all.
  chmod 0644 "$d"/*-cert.pem
}

# make_expired DIR: DIR/expired/server-{cert,key}.pem, signed by DIR's CA
# but valid only in 2001 (for the "certificate expired" message).
make_expired() {
  local d=$1 t
  mkdir -p "$d/expired"
  t=$(mktemp -d)
  {
    {
      echo "cn = ${names[0]}"
      local n
      for n in "${names[@]}"; do echo "dns_name = $n"; done
      echo "ip_address = 127.0.0.1"
      echo "ip_address = ::1"
      echo "tls_www_server"
      echo "encryption_key"
      echo "signing_key"
      echo "activation_date = \"2001-01-01 00:00:00 UTC\""
      echo "expiration_date = \"2001-12-31 00:00:00 UTC\""
    } > "$t/expired.info"
    certtool --generate-privkey --key-type=ecdsa \
      --outfile "$d/expired/server-key.pem"
    certtool --generate-certificate --load-privkey "$d/expired/server-key.pem" \
      --load-ca-certificate "$d/ca-cert.pem" --load-ca-privkey "$d/ca-key.pem" \
      --template "$t/expired.info" --outfile "$d/expired/server-cert.pem"
  } > "$t/log" 2>&1 || { cat "$t/log" >&2; rm -rf "$t"; return 1; }
  rm -rf "$t"
  cp "$d/ca-cert.pem" "$d/expired/ca-cert.pem"
  chmod 0644 "$d/expired"/*-cert.pem
}

# make_selfsigned DIR: DIR/selfsigned/server-{cert,key}.pem, a server
# certificate that signs itself (for the "self-signed" message).
make_selfsigned() {
  local d=$1 t
  mkdir -p "$d/selfsigned"
  t=$(mktemp -d)
  {
    {
      echo "cn = ${names[0]}"
      local n
      for n in "${names[@]}"; do echo "dns_name = $n"; done
      echo "ip_address = 127.0.0.1"
      echo "tls_www_server"
      echo "signing_key"
      echo "expiration_days = 3650"
    } > "$t/self.info"
    certtool --generate-privkey --key-type=ecdsa \
      --outfile "$d/selfsigned/server-key.pem"
    certtool --generate-self-signed \
      --load-privkey "$d/selfsigned/server-key.pem" \
      --template "$t/self.info" --outfile "$d/selfsigned/server-cert.pem"
  } > "$t/log" 2>&1 || { cat "$t/log" >&2; rm -rf "$t"; return 1; }
  rm -rf "$t"
  cp "$d/selfsigned/server-cert.pem" "$d/selfsigned/ca-cert.pem"
  chmod 0644 "$d/selfsigned"/*-cert.pem
}

make_pki "$dir" "nbdfs test CA"
make_pki "$dir/wrong" "nbdfs WRONG test CA"
make_expired "$dir"
make_selfsigned "$dir"
echo "make-pki: wrote $dir (CA, server for ${names[*]} 127.0.0.1 ::1, client;" \
     "wrong/ = untrusted CA; expired/ = a server certificate from 2001;" \
     "selfsigned/ = a self-signed server certificate)"
