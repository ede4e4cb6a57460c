#!/usr/bin/env bash
# Benchmark DKIM signing: microseconds per signature of campaign's own signer
# (message::dkim::Signers, relaxed/relaxed over the headers a send signs) with mail-auth's
# `ring` backend, which campaign builds with, against its `aws-lc-rs` backend, the baseline
# (what campaign built with before issue 14: a C library, aws-lc-sys, ~30 s of a cold build
# on its own). RSA-2048 and Ed25519, both backends in the same run. See BENCHMARKS.md, section
# "DKIM signing backends".
#
#   bench/dkim.sh                 # 5 rounds
#   ROUNDS=9 RSA_SIGNATURES=2000 bench/dkim.sh
#
# Environment:
#   ROUNDS              timed rounds per backend and algorithm (default 5); the backends take
#                       turns going first; medians are reported
#   RSA_SIGNATURES      signatures per RSA-2048 round (default 1000)
#   ED25519_SIGNATURES  signatures per Ed25519 round (default 20000)
#
# bench/dkim_sign.rs is built (release, this repository's profile settings) twice in a
# throwaway crate under bench-data/dkim/ that depends on this checkout: once as it is (ring),
# once with mail-auth's `aws-lc-rs` feature added, which mail-auth then prefers. The crate
# starts from this repository's Cargo.lock, so every shared crate is the tested version;
# cargo adds aws-lc-rs for the baseline (fetching it once if it is not in cargo's cache).
# Keys are made by openssl for the run (mode 600, removed on exit); the message is ~5 KB, a
# little more than bench/send.sh's ~4.4 KB. Nothing is sent anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${ROUNDS:-5}
RSA_SIGNATURES=${RSA_SIGNATURES:-1000}
ED25519_SIGNATURES=${ED25519_SIGNATURES:-20000}
BACKENDS=(ring aws-lc-rs)
CRATES=$ROOT/$DATA/dkim
export CARGO_TARGET_DIR=$CRATES/target

# bench_crate BACKEND EXTRA_FEATURES: the throwaway crate for one backend, built; prints the
# binary's path.
bench_crate() {
    local backend=$1 features=$2 dir=$CRATES/$1
    mkdir -p "$dir"
    cat >"$dir/Cargo.toml" <<TOML
[package]
name = "dkim-sign-$backend"
version = "0.0.0"
edition = "2024"
publish = false

[[bin]]
name = "dkim-sign-$backend"
path = "$ROOT/bench/dkim_sign.rs"

[dependencies]
campaign = { path = "$ROOT" }
mail-auth = { version = "=0.13.3", default-features = false, features = [$features] }

[profile.release]
codegen-units = 1
lto = "thin"

[workspace]
TOML
    # Fresh every run, so the shared crates follow this checkout's lock file.
    cp Cargo.lock "$dir/Cargo.lock"
    log "building the $backend signer (release)"
    cargo build --release --quiet --manifest-path "$dir/Cargo.toml"
    # Guard against feature unification handing both crates the same backend: mail-auth uses
    # aws-lc-rs whenever it is enabled.
    local has_aws=no want=no
    cargo tree --manifest-path "$dir/Cargo.toml" -i aws-lc-rs >/dev/null 2>&1 && has_aws=yes
    [[ $backend == aws-lc-rs ]] && want=yes
    if [[ $has_aws != "$want" ]]; then
        log "the $backend signer has aws-lc-rs in its tree: $has_aws; it would measure the wrong backend"
        exit 1
    fi
    echo "$CARGO_TARGET_DIR/release/dkim-sign-$backend"
}

declare -A BIN
BIN[ring]=$(bench_crate ring '')
BIN[aws-lc-rs]=$(bench_crate aws-lc-rs '"aws-lc-rs"')
versions=$(for b in "${BACKENDS[@]}"; do
    cargo tree --manifest-path "$CRATES/$b/Cargo.toml" -e normal --prefix none 2>/dev/null |
        grep -E '^(ring|aws-lc-rs|aws-lc-sys|mail-auth) ' || true
done | cut -d' ' -f1,2 | sort -u | paste -sd' ')

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$WORK/ed25519.pem"
chmod 600 "$WORK/rsa.pem" "$WORK/ed25519.pem"
{
    printf 'From: Friends of the Park <appeal@park.example>\r\n'
    printf 'To: Ann Donor <ann@donor.example>\r\n'
    printf 'Subject: =?utf-8?q?Thank_you=2C_Ann_=E2=80=94_your_gift_of_=C2=A3120?=\r\n'
    printf 'Date: Sun, 29 Nov 2026 09:00:00 +0000\r\n'
    printf 'Message-ID: <3f2a9c1e.d0@park.example>\r\n'
    printf 'MIME-Version: 1.0\r\n'
    printf 'List-Unsubscribe: <https://park.example/u?t=0123456789abcdef0123456789abcdef>\r\n'
    printf 'List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n'
    printf 'Content-Type: text/plain; charset=utf-8\r\n'
    printf 'Content-Transfer-Encoding: quoted-printable\r\n\r\n'
    for ((i = 0; i < 60; i++)); do
        printf 'Line %02d of the appeal: thank you for standing by the park this year, Ann.\r\n' "$i"
    done
} >"$WORK/message.eml"

# rounds ALGORITHM SIGNATURES: ROUNDS timed runs per backend, appended to $WORK/BACKEND-ALG.
rounds() {
    local alg=$1 n=$2 i b order
    for ((i = 0; i < ROUNDS; i++)); do
        order=("${BACKENDS[@]}")
        ((i % 2)) && order=("${BACKENDS[1]}" "${BACKENDS[0]}")
        for b in "${order[@]}"; do
            "${BIN[$b]}" "$WORK/$alg.pem" "$WORK/message.eml" "$n" | cut -d' ' -f1 >>"$WORK/$b-$alg"
        done
    done
}
log "timing RSA-2048 ($ROUNDS rounds of $RSA_SIGNATURES signatures per backend)"
rounds rsa "$RSA_SIGNATURES"
log "timing Ed25519 ($ROUNDS rounds of $ED25519_SIGNATURES signatures per backend)"
rounds ed25519 "$ED25519_SIGNATURES"

SRC_FINGERPRINT=$(find src Cargo.toml Cargo.lock -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
machine_header "DKIM signing, mail-auth backends"
echo "# crates: $versions; message $(wc -c <"$WORK/message.eml") bytes; $ROUNDS rounds (medians), backends alternating first"
echo
echo "| key | ring µs/signature | aws-lc-rs (baseline) µs/signature | ring / aws-lc-rs |"
echo "|---|---:|---:|---:|"
for alg in rsa ed25519; do
    name=RSA-2048
    [[ $alg == ed25519 ]] && name=Ed25519
    awk -v n="$name" -v r="$(median "$WORK/ring-$alg" 1)" -v a="$(median "$WORK/aws-lc-rs-$alg" 1)" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.2f |\n", n, r, a, r / a }'
done
echo
for alg in rsa ed25519; do
    echo "- raw µs, $alg: ring $(raw "$WORK/ring-$alg" 1); aws-lc-rs $(raw "$WORK/aws-lc-rs-$alg" 1)"
done
