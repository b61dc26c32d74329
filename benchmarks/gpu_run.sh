#!/usr/bin/env bash
# The GPU benchmarks in one prepared run (scale first: its 32k-item probe and extraction are the open targets) (random weights; nothing is downloaded).
# On the device machine: bash benchmarks/gpu_run.sh <out-folder> [steps, default scale,features,estimators,pipeline (train: add it by name)]. Wheels of this package and of
# what the image lacks (optuna and its needs) travel in .whl/. Each benchmark has its own time
# limit so one slow step cannot cost the others; logs and CSVs go to the out folder.
set -u
OUTDIR=${1:-/tmp/gpu_out}
STEPS=,${2:-scale,features,estimators,pipeline},
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 AUTOTRANSFER_CACHE_DIR=/tmp/atcache
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  python3 -c "import torch, timm, optuna; print(torch.__version__, timm.__version__, optuna.__version__)"; } \
  > "$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"
run() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  [[ $STEPS == *,$name,* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  echo "== $name rc=$? $((SECONDS - t0)) s"; tail -n 12 "$OUTDIR/$name.log"
}
run scale 180 python3 benchmarks/bench_scale.py --device cuda --sizes 2000,8000,32000 --px 224 --probe-grid \
  --out "$OUTDIR/bench_scale_cuda.csv"
run features 150 python3 benchmarks/bench_features.py --device cuda --batch-size 256 --jpegs 16384 \
  --out "$OUTDIR/bench_features_cuda.csv"
run estimators 120 python3 benchmarks/bench_estimators.py --device cuda --repeats 5 --budget 15 \
  --out "$OUTDIR/bench_estimators_cuda.csv"
run pipeline 120 python3 benchmarks/bench_pipeline.py --device cuda --images 2048 --repeats 1 --epochs 2 --today-epochs 1 \
  --out "$OUTDIR/bench_pipeline_cuda.csv"
run train 90 python3 benchmarks/bench_train.py --device cuda --out "$OUTDIR/bench_train_cuda.csv"
