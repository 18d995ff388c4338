#!/usr/bin/env bash
# Builds lineprof and the demo program (with frame pointers and line tables),
# runs the demo under lineprof's allocator, and prints the per-line report.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet --bin lineprof
RUSTFLAGS="-C force-frame-pointers=yes" \
    cargo build --release --quiet --manifest-path fixtures/Cargo.toml --bin demo
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
LINEPROF_OUT="$out/demo.lprof" fixtures/target/release/demo
./target/release/lineprof report "$out/demo.lprof" "$@"
