#!/usr/bin/env bash
# Edge coverage a target's corpus reaches in the project's own source files, from libFuzzer's
# -print_coverage (no llvm-cov needed: the Debian one is too old for rustc's profiles).
#
#   fuzz/coverage.sh TARGET [-v]
#
# Prints covered/total instrumented edges per file of vhost-user/, vswitch/ and
# hypervisor-hooks/, then (-v) every function of those files that is not fully covered. Run after
# fuzz/run-all.sh has built the target (same build, so no rebuild).
#
# Read the numbers as relative: the totals include edges no input should reach (panic and
# overflow branches, AddressSanitizer's report branches), and inlined functions count toward
# the function and file they were inlined into.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: fuzz/coverage.sh TARGET [-v]}
verbose=${2:-}
bin="fuzz/target/x86_64-unknown-linux-gnu/release/$t"
[ -x "$bin" ] || { echo "build first: fuzz/run-all.sh 0 $t" >&2; exit 1; }
dirs=()
for d in "fuzz/corpus/$t" "fuzz/seeds/$t"; do [ -d "$d" ] && dirs+=("$d"); done
"$bin" -runs=0 -print_coverage=1 "${dirs[@]}" 2>&1 |
    grep -E '^(UN)?COVERED_FUNC' |
    awk -v verbose="$verbose" '
        {
            split($5, e, "/"); loc = $NF; sub(/:[0-9]+$/, "", loc)
            if (loc !~ /\/(vhost-user|vswitch|hypervisor-hooks)\/src\//) next
            crate = loc; sub(/\/src\/.*/, "", crate); sub(/.*\//, "", crate)
            sub(/.*\/src\//, "src/", loc)
            file = crate "/" loc
            cov[file] += e[1]; tot[file] += e[2]
            if (e[1] < e[2]) {
                name = ""; for (i = 6; i < NF; i++) name = name (i > 6 ? " " : "") $i
                part[file] = part[file] sprintf("%s\t1\t    %4d/%-4d %s\n", file, e[1], e[2], name)
            }
        }
        END {
            for (f in tot) {
                printf "%s\t0\t%-32s %5d/%-5d edges (%3.0f%%)\n", f, f, cov[f], tot[f], 100 * cov[f] / tot[f]
                if (verbose == "-v") printf "%s", part[f]
                C += cov[f]; T += tot[f]
            }
            if (T) printf "~\t0\t%-32s %5d/%-5d edges (%3.0f%%)\n", "total", C, T, 100 * C / T
        }' | sort -t "$(printf '\t')" -k1,1 -k2,2n -s | cut -f3-
