#!/usr/bin/env bash
# Photos a minute restoring an archive on 1 and on 2 processes (docs/BENCHMARKS.md).
#   benchmarks/archive_throughput.sh FOLDER_OF_FACES [extra restore options]
# The wall time includes each run's start (imports, model load): it is what a user waits for.
set -euo pipefail
in=$1; shift
n=$(find "$in" -type f \( -name '*.png' -o -name '*.jpg' \) | wc -l)
out=$(mktemp -d)
run() {  # label, command...
  local label=$1; shift
  local start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  local end=$(date +%s.%N)
  python -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]}: {int(sys.argv[4])} photos in {s:.1f} s = {60*int(sys.argv[4])/s:.1f} photos/min')" "$start" "$end" "$label" "$n"
}
run "1 process, 2 threads" env OMP_NUM_THREADS=2 python -m lpipdiff restore "$in" -o "$out/one" --archive "$@"
run "2 processes (accelerate), 1 thread each" python -m accelerate.commands.launch --multi_gpu --num_processes 2 \
  --num_machines 1 --mixed_precision no --dynamo_backend no -m lpipdiff restore "$in" -o "$out/two" "$@"
rm -rf "$out"
