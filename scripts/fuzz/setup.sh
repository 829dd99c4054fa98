#!/usr/bin/env bash
# scripts/fuzz/setup.sh - make `cargo fuzz` usable for mawqif's fuzz targets.
#
# Installs cargo-fuzz from crates.io (pinned) unless that version is there,
# and picks the toolchain to build the targets with:
#   1. the nightly toolchain, if rustup has it (else `rustup toolchain install
#      nightly --profile minimal` is tried once);
#   2. otherwise the stable toolchain, if it builds a trivial libFuzzer target:
#      with `--sanitizer none` cargo-fuzz passes no nightly-only flag.
# The targets are built with `--sanitizer none` either way (see FUZZING.md).
#
# Prints, on stdout, how to call cargo (`cargo +nightly` or `cargo +stable`);
# logs go to stderr. Exits 3 when no toolchain can build the targets (callers
# skip, loudly).
set -euo pipefail

CARGO_FUZZ_VERSION="0.13.2"
log() { echo "fuzz-setup: $*" >&2; }

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz >&2
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "no nightly toolchain; trying: rustup toolchain install nightly --profile minimal"
  rustup toolchain install nightly --profile minimal >&2 || log "rustup could not install nightly"
fi

# A toolchain works when it builds a trivial libFuzzer target: try each.
probe() {
  local dir
  dir="$(mktemp -d)"
  mkdir -p "$dir/fuzz/fuzz_targets" "$dir/src"
  printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n' > "$dir/Cargo.toml"
  : > "$dir/src/lib.rs"
  cat > "$dir/fuzz/Cargo.toml" <<'TOML'
[package]
name = "probe-fuzz"
version = "0.0.0"
edition = "2021"
[package.metadata]
cargo-fuzz = true
[dependencies]
libfuzzer-sys = "0.4"
[workspace]
members = ["."]
[[bin]]
name = "probe"
path = "fuzz_targets/probe.rs"
TOML
  printf '#![no_main]\nlibfuzzer_sys::fuzz_target!(|d: &[u8]| { let _ = d; });\n' \
    > "$dir/fuzz/fuzz_targets/probe.rs"
  local ok=1
  (cd "$dir" && eval "$1 fuzz build --sanitizer none probe" >/dev/null 2>&1) || ok=0
  rm -rf "$dir"
  [[ $ok -eq 1 ]]
}

if rustup run nightly rustc --version >/dev/null 2>&1; then
  log "using: cargo +nightly fuzz ... --sanitizer none ($(rustup run nightly rustc --version))"
  echo "cargo +nightly"
  exit 0
fi
log "probing: cargo +stable fuzz build --sanitizer none"
if probe "cargo +stable"; then
  log "using: cargo +stable fuzz ... --sanitizer none ($(rustc +stable --version))"
  echo "cargo +stable"
  exit 0
fi
log "no toolchain here can build libFuzzer targets"
exit 3
