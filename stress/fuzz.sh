#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of what a peer can send: runs each target of fuzz/ in turn for
# FUZZ_SECONDS, then minimizes its corpus so that fuzz/corpus/ stays small enough to commit.
# Exits non-zero when any target found a crash, a hang or an out-of-memory; the inputs are in
# fuzz/artifacts/<target>/. Works on a stable toolchain.
#
#   stress/fuzz.sh                          every target, 60 s each, with AddressSanitizer
#   FUZZ_SECONDS=300 stress/fuzz.sh         longer
#   FUZZ_TARGETS="frames attach" stress/fuzz.sh
#   FUZZ_SANITIZER=none stress/fuzz.sh      no sanitizer: about twice the executions
#
# One target by hand, from fuzz/ (stable needs RUSTC_BOOTSTRAP=1 for the sanitizer flags):
#   RUSTC_BOOTSTRAP=1 cargo fuzz run frames -- -max_total_time=60
#   RUSTC_BOOTSTRAP=1 cargo fuzz run frames artifacts/frames/crash-…    (replay one input)
# A fixed crash input goes to fuzz/regressions/<target>/, which CI replays
# (core-rs/tests/fuzz_corpus.rs) with the corpus.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-frames geometry attach queue}"
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# cargo-fuzz passes -Z flags to rustc for the sanitizer; this lets a stable rustc accept them.
# (With `none` it passes none, but the variable is harmless then.)
export RUSTC_BOOTSTRAP=1

echo "== building ${targets} (sanitizer: ${sanitizer})"
cargo fuzz build --sanitizer "$sanitizer"

failed=()
for t in $targets; do
  # Logs beside, not in, artifacts/<target>/: cargo fuzz takes the newest file there for the crash.
  mkdir -p "corpus/$t" "artifacts/$t" artifacts/logs
  log="artifacts/logs/$t-run.log"
  echo "== fuzzing $t for ${seconds} s (log: fuzz/$log)"
  # -timeout: an input that takes 10 s is a hang, saved and reported like a crash.
  # -rss_limit_mb: a 64 MiB frame buffer is allowed; runaway growth is not.
  if cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    grep -E -A1 "panicked at" "$log" | head -4 || true
    grep -E "^SUMMARY|Test unit written to" "$log" || true
  fi
  runs=$(grep -oE "^stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
  cov=$(grep -oE "cov: [0-9]+ ft: [0-9]+" "$log" | tail -1 || true)
  echo "   $t: $status, ${runs} executions, ${cov:-no coverage line}"

  # cmin replaces the corpus with the smallest subset that keeps its coverage (libFuzzer -merge=1).
  if [ "$status" = ok ]; then
    cargo fuzz cmin --sanitizer "$sanitizer" "$t" "corpus/$t" >"artifacts/logs/$t-cmin.log" 2>&1 ||
      echo "   $t: corpus minimization failed, see fuzz/artifacts/logs/$t-cmin.log"
    echo "   $t: corpus $(find "corpus/$t" -type f | wc -l) files, $(cat "corpus/$t"/* | wc -c) bytes"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "fuzzing found no crash"
