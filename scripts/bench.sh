#!/usr/bin/env bash
# All benchmarks, one after another (they measure; nothing here is a test). Each prints a table and
# a JSON line; the output of each is kept in out/bench/NAME.log. Takes about 20-30 minutes on a
# 2-core CPU machine, most of it the 16384 px mosaic of bench_memory.py (quality: the shipped models on
# the held-out scenes, bench_quality.py, needs ../shared/data beside the repository).
#   bash scripts/bench.sh            # everything
#   bash scripts/bench.sh pipeline   # only benchmarks/bench_pipeline.py (names: pipeline compare overhead scaling memory gpu layout tile_host quality)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out/bench
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(pipeline compare overhead scaling memory gpu layout tile_host quality)
for name in "${names[@]}"; do
    case $name in
        pipeline) args=(--repeat 3) ;;
        *) args=() ;;
    esac
    echo "== benchmarks/bench_$name.py ${args[*]:-}"
    .venv/bin/python "benchmarks/bench_$name.py" "${args[@]}" 2>&1 | tee "out/bench/$name.log"
done
