#!/usr/bin/env bash
# Builds lineprof and the demo program the way `cargo lineprof` builds
# (frame pointers, line tables and full function names), runs the demo
# under lineprof's allocator, and prints the per-line report.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet --bin lineprof
RUSTFLAGS="-C force-frame-pointers=yes -C symbol-mangling-version=v0" CARGO_PROFILE_RELEASE_DEBUG=limited \
    cargo build --release --quiet --manifest-path fixtures/Cargo.toml \
    --target-dir target/demo --bin demo
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
LINEPROF_OUT="$out/demo.lprof" target/demo/release/demo
./target/release/lineprof report "$out/demo.lprof" "$@"
