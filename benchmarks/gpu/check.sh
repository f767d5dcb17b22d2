#!/usr/bin/env bash
# The CUDA path, exercised: the suite's CUDA tests, then Wanda and SparseGPT 50 % timed on a
# random ~1B LLaMA-layout model (and llm-compressor when it imports), into one results file.
#
#   bash benchmarks/gpu/check.sh                  # on a GPU machine; results in $OUT (default benchmarks/gpu/out)
#   bash benchmarks/gpu/check.sh --device cpu --tiny   # dry run of everything that needs no GPU
#   bash benchmarks/gpu/check.sh --fetch-wheels   # here: download the wheels the GPU machine lacks
#
# A Python without the workspace installed gets its src folders on PYTHONPATH (entry points
# from run.py --bootstrap) and installs wheels from benchmarks/gpu/wheels when present.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
WHEELS=benchmarks/gpu/wheels
TEST_DEPS=(attrs pluggy pytest tqdm)

if [[ "${1:-}" == "--fetch-wheels" ]]; then  # llm-compressor's closure (datasets, pyarrow...) is too large to carry
    exec "$PY" -m pip download --quiet --only-binary :all: -d "$WHEELS" "${TEST_DEPS[@]}"
fi
OUT="${OUT:-benchmarks/gpu/out}"
mkdir -p "$OUT"
if [[ -d "$WHEELS" ]]; then
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "${TEST_DEPS[@]}" > "$OUT/pip.log" 2>&1 || echo "test wheels did not install (see $OUT/pip.log)"
    if ls "$WHEELS"/llmcompressor-* > /dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" llmcompressor >> "$OUT/pip.log" 2>&1 || echo "llm-compressor did not install (see $OUT/pip.log)"
    fi
fi
if ! "$PY" -c "import secateurs_transformers" 2> /dev/null; then
    SITE="$(mktemp -d)"
    "$PY" benchmarks/gpu/run.py --bootstrap "$SITE"
    export PYTHONPATH="$SITE:$PWD/core/src:$PWD/adapters/transformers/src:$PWD/adapters/timm/src:$PWD/plugins/ken/src:$PWD/plugins/neuroal/src:$PWD/plugins/lrp/src:${PYTHONPATH:-}"
fi
DEVICE=cuda
prev=""
for arg in "$@"; do [[ "$prev" == "--device" ]] && DEVICE="$arg"; prev="$arg"; done
if [[ "$DEVICE" == cuda* ]]; then
    timeout 300 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests > "$OUT/pytest.log" 2>&1
    echo "CUDA tests: exit $? ($(tail -1 "$OUT/pytest.log"))"
fi
"$PY" benchmarks/gpu/run.py --out "$OUT/gpu.json" --pytest-log "$OUT/pytest.log" "$@"
