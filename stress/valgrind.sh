#!/usr/bin/env bash
# Runs every Rust test binary of the core under valgrind's memcheck: any invalid read or write,
# use of uninitialised memory, or definite leak fails the run. The fault and hostile trials run
# fewer rounds here (valgrind is ~30x slower); their full counts run natively in the stress task.
# The access tests fork a child that drops to another uid, which valgrind does not follow well:
# they are skipped here (they run natively in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  echo "valgrind is not installed (Debian: apt-get install valgrind)" >&2
  exit 2
fi

mapfile -t binaries < <(
  cargo test --release --locked --workspace --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
'
)
status=0
for bin in "${binaries[@]}"; do
  echo "== valgrind $(basename "$bin")"
  if ! SHMCALL_FAULT_TRIALS=8 SHMCALL_HOSTILE_TRIALS=4 SHMCALL_SOAK_SECONDS=2 \
    valgrind --tool=memcheck --error-exitcode=9 --leak-check=full \
      --errors-for-leak-kinds=definite --show-possibly-lost=no --quiet \
      "$bin" --test-threads=1 -q --skip another_uid --skip another_uid_cannot_reach; then
    echo "!! $(basename "$bin") failed under valgrind" >&2
    status=1
  fi
done
exit "$status"
