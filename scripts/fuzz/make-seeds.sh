#!/usr/bin/env bash
# scripts/fuzz/make-seeds.sh - rewrite the committed seed corpora, fuzz/seeds/<target>/,
# from the project's own files: eval texts and gold sets, models/registry.toml,
# generated E5S1 files and what importing one writes, a head, hub listings.
# The generator is the test `generated_fuzz_seeds_load`
# (tests/integration/fuzz_regressions.rs), which also checks every seed.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf fuzz/seeds
MAWQIF_WRITE_FUZZ_SEEDS=1 cargo test --test integration generated_fuzz_seeds_load
ls -R fuzz/seeds | head -60
