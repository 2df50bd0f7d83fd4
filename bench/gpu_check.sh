#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one command, from the repository root of a GPU machine (no internet needed):
#
#     OUT=/path/to/results bash bench/gpu_check.sh
#
# Under 8 minutes on one GPU (each step has a time limit). Installs offline (pip --no-index from ./wheels or $GPU_CHECK_WHEELS when they are
# there; else uses what is installed), then writes to $OUT (default ./gpu_check_out):
#   device.json    the GPU's name (torch and nvidia-smi), compute capability, torch/CUDA versions, cores, memory
#   train.jsonl    bench_train: the recipe's step (run_upscale --recipe racecomp: 0.1 L1 + VGG19 perceptual) for
#                  resnet50 and fastvit_ma36 at x2, --amp auto, without and with --channels-last, on the loader
#                  and on an on-device batch; GFLOP per image, TFLOP/s and their fraction of the device's
#                  matmul and 3x3-conv ceiling (its rows with bench "ceiling")
#   data.jsonl     bench_data: the loader alone (JPEG and uint8 cache) with 2 workers on 2 cores, and with a
#                  worker per core on all of them
#   eval.jsonl     bench_eval: PSNR/SSIM and evaluate_upscaler (the first arch, x2) over FairFace val's size (10,954)
#   summary.csv    one row per figure of the three files above
#   status.csv     each step's command, exit status and seconds; *.log its output
# Nothing is downloaded: encoders are not pretrained and the VGG19 is randomly initialised (the same time and
# FLOPs as ImageNet weights). GPU_CHECK_TINY=1 runs every step at toy sizes on whatever device there is (the CPU
# in tests/test_gpu_check.py, with GPU_CHECK_ARCHS=fastvit_t8), to check the script and the files it writes.
set -u
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export RACECOMP_CACHE=${RACECOMP_CACHE:-$OUT/cache}  # demo data and image caches
ARCHS=${GPU_CHECK_ARCHS:-resnet50 fastvit_ma36}  # the study's two encoders (the test: a small one)
CORES=$(python -c "import os; print(len(os.sched_getaffinity(0)))")
TWO_CORES=$(python -c "import os; print(','.join(map(str, sorted(os.sched_getaffinity(0))[:2])))")
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  SIZES="--hr-size 32 --batch-size 2 --warmup 1 --repeats 1 --threads 1"
  TRAIN="--steps 2 --images 8 --ceiling-size 64"
  DATA="--images 8"  # the same demo data as TRAIN's (generated once)
  EVAL="--images 4 --hr-size 32 --batch-size 2 --warmup 1 --repeats 1 --threads 1"
  LIMIT=120
  TRAIN_LIMIT=240
else
  SIZES="--hr-size 224 --batch-size 32 --warmup 3 --repeats 3"
  TRAIN="--steps 10 --images 1024 --ceiling-size 8192"
  DATA="--images 1024"
  EVAL="--images 10954 --hr-size 224 --batch-size 64 --warmup 2 --repeats 1"
  # Seconds each step may take: 180 + 2 x 45 + 90 + 30 = 6.5 minutes (+ 2 for an install) even if every step ran
  # out of time (a step that does is recorded, and the others still run).
  LIMIT=45
  TRAIN_LIMIT=180
fi
echo "step,status,seconds,command" > "$OUT/status.csv"

step() {  # step NAME SECONDS COMMAND...: run it within SECONDS, log its output, record how it ended; go on either way
  local name=$1 limit=$2 started=$SECONDS status
  shift 2
  echo "[gpu_check] $name: $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  status=$?
  echo "$name,$status,$((SECONDS - started)),\"$*\"" >> "$OUT/status.csv"
  tail -n 4 "$OUT/$name.log"
}

WHEELS=${GPU_CHECK_WHEELS:-wheels}
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  echo "install: skipped (GPU_CHECK_TINY)" > "$OUT/install.log"
else
  if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    step install 120 python -m pip install --no-index --find-links "$WHEELS" -r requirements.txt
  else
    echo "install: no wheels in $WHEELS; using the installed packages" | tee "$OUT/install.log"
  fi
  python -c "import torch, timm, racecomp" || { echo "torch, timm or racecomp cannot be imported: stop"; exit 1; }
fi

step train "$TRAIN_LIMIT" python -m bench.bench_train --device auto --arch $ARCHS --scale 2 --recipe racecomp --amp auto \
  --memory-format contiguous channels_last --mode loader synthetic --workers "$CORES" $SIZES $TRAIN \
  --results "$OUT/train.jsonl"
step data-2-cores "$LIMIT" taskset -c "$TWO_CORES" python -m bench.bench_data --device auto --scale 2 --workers 2 \
  $SIZES $DATA --results "$OUT/data.jsonl"
step data-all-cores "$LIMIT" python -m bench.bench_data --device auto --scale 2 --workers "$CORES" $SIZES $DATA \
  --results "$OUT/data.jsonl"
step eval "$((2 * LIMIT))" python -m bench.bench_eval --device auto --scale 2 --only-project --arch ${ARCHS%% *} $EVAL \
  --results "$OUT/eval.jsonl"
step summary 30 python -m bench.gpu_summary "$OUT"  # device.json and summary.csv
echo "[gpu_check] done in ${SECONDS} s: $OUT"
