#!/usr/bin/env bash
# The accelerator check of issue 11 in one command (budget: 8 minutes on one H200):
#   1. the So400m stage-1 train step (bf16, one row of 16,384 tokens from the stage-1 paper
#      stream, L1 + KL) with the OLD and with the NEW attention implementation;
#   2. the inference comparison against Apple's ml-atoken (bench/bench_vs_ml_atoken.py, their
#      model on cuda), when --ml-atoken DIR is given;
#   3. bench/gsplat_compare.py (ours vs gsplat; it says what it skips when gsplat is missing).
# Each prints tokens/s (or times), MFU and peak device memory; every part has its own time limit
# and a failing part does not stop the others. The last lines are a summary.
#
#   bench/device_check.sh [--smoke] [--ml-atoken DIR] [OLD_IMPL [NEW_IMPL]]
#
# OLD_IMPL / NEW_IMPL name attention implementations: `attention_impl` values ("dense",
# "block_sparse", "auto", ...) where the model config has that field, else "dense" / "chunked"
# (attention_kv_chunk). Defaults: dense and auto with attention_impl, else chunked and dense.
# --smoke: the tiny preset, small rows and scenes, float32: a minute on a CPU, to check the
# script itself. PYTHON picks the interpreter (default python3). Packages the device image lacks
# (grain, array-record, ml-collections, tensorflow-datasets, av, trimesh, tensorboardX, and for
# part 2 diffusers, webdataset, ftfy) travel as wheels in .whl/ (see the device README); this
# script installs whatever .whl/ holds into /tmp/site first.
set -u -o pipefail
cd "$(dirname "$0")/.."

SMOKE=0
MLA=""
IMPLS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --ml-atoken) MLA="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) IMPLS+=("$1") ;;
  esac
  shift
done
if [ ${#IMPLS[@]} -gt 2 ]; then
  echo "error: at most two attention implementations (OLD NEW), got ${IMPLS[*]}" >&2
  exit 2
fi

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

HAS_IMPL=$($PY -c "import dataclasses; from atoken_jax import config as c; \
print(int('attention_impl' in {f.name for f in dataclasses.fields(c.ModelConfig)}))") || exit 1
if [ "$HAS_IMPL" = 1 ]; then DEFAULT_OLD=dense; DEFAULT_NEW=auto; else DEFAULT_OLD=chunked; DEFAULT_NEW=dense; fi
OLD=${IMPLS[0]:-$DEFAULT_OLD}
NEW=${IMPLS[1]:-$DEFAULT_NEW}

if [ $SMOKE = 1 ]; then
  PRESET=tiny; ROW_LEN=1024; DTYPE=float32; STEPS=2; T_TRAIN=900; T_INFER=900; T_GS=900
  INFER_ARGS=(--preset tiny --repeats 1); GS_ARGS=(--voxels 300 --per-voxel 4 --size 64 --repeats 1)
else
  PRESET=so400m; ROW_LEN=16384; DTYPE=bfloat16; STEPS=5; T_TRAIN=150; T_INFER=90; T_GS=60
  INFER_ARGS=(--preset so400m --repeats 3 --torch-device cuda); GS_ARGS=(--size 512)
fi

SUMMARY=()
run_part() {  # name, seconds, command...
  local name=$1 seconds=$2
  shift 2
  echo "=== $name (limit ${seconds} s): $*"
  local t0=$SECONDS
  timeout "$seconds" "$@" 2>&1 | tee /tmp/device_check_part.log
  local rc=${PIPESTATUS[0]}
  local last
  last=$(grep -E "tokens/s|MFU|\| |ratio|ms" /tmp/device_check_part.log | tail -n 4)
  [ $rc = 124 ] && last="TIMED OUT after ${seconds} s"
  [ $rc != 0 ] && [ $rc != 124 ] && last="FAILED (exit $rc): $(tail -n 1 /tmp/device_check_part.log)"
  SUMMARY+=("--- $name ($((SECONDS - t0)) s)" "$last")
}

for impl in "$OLD" "$NEW"; do
  run_part "train step, $PRESET, attention $impl" "$T_TRAIN" \
    $PY bench/bench_train_step.py --preset "$PRESET" --rows 1 --row-len "$ROW_LEN" \
      --stream paper --dtype "$DTYPE" --steps "$STEPS" --attention "$impl"
done

if [ -n "$MLA" ]; then
  run_part "inference vs ml-atoken" "$T_INFER" \
    $PY bench/bench_vs_ml_atoken.py --ml-atoken "$MLA" --skip-train "${INFER_ARGS[@]}"
else
  SUMMARY+=("--- inference vs ml-atoken" "skipped: pass --ml-atoken DIR (atoken_inference/ inside)")
fi

run_part "gsplat_compare" "$T_GS" $PY bench/gsplat_compare.py "${GS_ARGS[@]}"

echo
echo "=== summary ($PRESET, $DTYPE, attention old=$OLD new=$NEW, ${SECONDS} s in all)"
printf '%s\n' "${SUMMARY[@]}"
