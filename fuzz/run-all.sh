#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each (default 60), one after another,
# on the stable toolchain, after replaying the saved regressions. Exits non-zero if any target
# crashed or any regression input still fails; crashes are left in fuzz/artifacts/<target>/.
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]
#
# Environment:
#   FUZZ_SANITIZER  address (default; stable rustc with RUSTC_BOOTSTRAP=1) or none
#   FUZZ_NICE       prefix for the fuzzing processes (default "nice -n 10": the machine is shared)
#   FUZZ_ARGS       extra libFuzzer arguments, e.g. "-jobs=2 -workers=2"
#
# Corpora: fuzz/corpus/<target>/ (not committed, grows run after run) is the working corpus;
# the committed seeds in fuzz/seeds/<target>/ are read alongside it. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
[ $# -gt 0 ] && shift
all=(eth_parse message_parsers hooks_messages descriptor_chains packed_chains driver_rx vhost_user_stream evpn_fdb)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
san=${FUZZ_SANITIZER:-address}
nice_cmd=${FUZZ_NICE:-nice -n 10}
read -r -a extra <<<"${FUZZ_ARGS:-}"

# cargo-fuzz passes -Z flags (-Zsanitizer=address) that only a nightly rustc accepts; stable
# rustc accepts them too when RUSTC_BOOTSTRAP=1. With -s none it passes none.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Inputs the fuzzer generates above these lengths would only be slower, not more interesting.
max_len() {
    case $1 in
        vhost_user_stream | descriptor_chains | packed_chains) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

$nice_cmd cargo fuzz build -s "$san"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    bin="fuzz/target/x86_64-unknown-linux-gnu/release/$t"
    if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
        echo "=== $t: replaying fuzz/regressions/$t"
        if ! $nice_cmd "$bin" -runs=1 "fuzz/regressions/$t"/*; then
            failed+=("$t (regression)")
        fi
    fi
    echo "=== $t: fuzzing for ${secs}s"
    if ! $nice_cmd cargo fuzz run -s "$san" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=30 -max_len="$(max_len "$t")" \
        -print_final_stats=1 "${extra[@]}"; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (crashing inputs in fuzz/artifacts/)"
    exit 1
fi
echo "all fuzz targets ran ${secs}s each without a crash: ${targets[*]}"
