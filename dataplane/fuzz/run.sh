#!/usr/bin/env bash
# Runs each cargo-fuzz target in turn for SECONDS (default 20; CI's short
# run), one libFuzzer process at a time, niced: `dataplane/fuzz/run.sh 600`
# for a half-hour run of the three. Targets can be named after SECONDS.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --version 0.13.2 --locked`).
# The toolchain is the pinned stable one; cargo fuzz passes it nightly-only
# -Z flags (sanitizer, coverage passes), which RUSTC_BOOTSTRAP=1 lets it
# accept. Builds go to dataplane/fuzz/target; the corpora libFuzzer grows go
# to dataplane/fuzz/corpus/TARGET (untracked), starting from the tracked
# seeds/TARGET; a crash is saved under dataplane/fuzz/artifacts/TARGET and
# ends the script with a failure.
set -euo pipefail
cd "$(dirname "$0")/.." # dataplane/, where cargo fuzz finds fuzz/

seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(packet kexinit userauth)

export RUSTC_BOOTSTRAP=1
fuzz=(nice cargo fuzz)
# FUZZ_SANITIZER=none skips AddressSanitizer: the code under test is safe
# Rust, and the ASan build of every dependency (bundled SQLite included)
# takes ~30 min from cold on 2 cores; CI uses none.
dir=(--target-dir fuzz/target -s "${FUZZ_SANITIZER:-address}")

start=$(date +%s)
"${fuzz[@]}" build "${dir[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s"

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz: $t for ${seconds} s"
    # -timeout: one input taking this long is a hang, reported as a crash.
    "${fuzz[@]}" run "${dir[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1
done
echo "fuzz: all done in $(($(date +%s) - start)) s"
