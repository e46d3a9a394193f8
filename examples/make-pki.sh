#!/usr/bin/env bash
# Makes every certificate and key the example configs name, in DIR (default: examples/pki), with
# `smgate pki` and `smgate audit keygen`. Files that exist are kept, so it is safe to run again;
# delete DIR to start over. Needs `smgate` on PATH (see the README's Quick start) or SMGATE=/path/to/smgate.
set -euo pipefail
out="${1:-$(dirname "$0")/pki}"
smgate="${SMGATE:-smgate}"
mkdir -p "$out"

# make FILE ARGS...: run `smgate pki ARGS --out-dir DIR` unless DIR/FILE exists already.
make() {
    local file=$1
    shift
    [ -e "$out/$file" ] || "$smgate" pki "$@" --out-dir "$out" >/dev/null
}
sm2_ca=(--ca-cert "$out/sm2_intermediate.pem" --ca-key "$out/sm2_intermediate.key")
tls_ca=(--ca-cert "$out/tls_root.pem" --ca-key "$out/tls_root.key")

# SM2 (TLCP): root, an intermediate that issues the leaves (its certificate goes in NAME_chain.pem).
make sm2_root.pem ca --type sm2 --cn "Example SM2 Root CA" --org "smgate examples" --name sm2_root
make sm2_intermediate.pem intermediate --ca-cert "$out/sm2_root.pem" --ca-key "$out/sm2_root.key" \
    --cn "Example SM2 Issuing CA" --org "smgate examples" --name sm2_intermediate
# The edge gateway's TLCP double certificate (edge ingress, TCP proxy, RPC).
make edge_sign.pem issue-tlcp --role server "${sm2_ca[@]}" --cn localhost --dns localhost --ip 127.0.0.1 \
    --name edge
# Mutual TLCP service hop: the payments host's server pair and the orders service's client pair.
make payments_sign.pem issue-tlcp --role server "${sm2_ca[@]}" --cn payments.internal \
    --dns payments.internal --name payments
make orders_sign.pem issue-tlcp --role client "${sm2_ca[@]}" --cn orders --ou orders --name orders

# ECDSA (standard TLS): root, the edge's server certificate, a client certificate for operators.
make tls_root.pem ca --type ecdsa --cn "Example TLS Root CA" --org "smgate examples" --name tls_root
make edge_tls.pem issue --type ecdsa --role server "${tls_ca[@]}" --cn localhost --dns localhost \
    --ip 127.0.0.1 --name edge_tls
make ops_client.pem issue --type ecdsa --role client "${tls_ca[@]}" --cn "operator one" --ou ops \
    --name ops_client

# Audit trail: the HMAC-SM3 chain key and the SM2 certificate that signs checkpoints.
[ -e "$out/audit_chain.key" ] || "$smgate" audit keygen "$out/audit_chain.key" >/dev/null
make audit_signing.pem issue --audit-signing "${sm2_ca[@]}" --cn "smgate example audit" --name audit_signing

echo "example PKI in $out"
