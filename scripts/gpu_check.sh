#!/usr/bin/env bash
# The whole GPU check in one call, within a wall-clock limit it enforces itself.
#
#   scripts/gpu_check.sh                 # on a CUDA machine: 540 s in all
#   scripts/gpu_check.sh --limit 900     # another limit (seconds)
#   scripts/gpu_check.sh --dry-run       # the same stages on the CPU with tiny budgets (CI)
#
# Stages, in order (each is cut off so that the later ones still get their share):
#   0. install what is missing: wheels in .whl/ (offline), else `pip install -e .`;
#      a CUDA build of torch must already be there (PyTorch's install selector gives the command)
#   1. step time and peak memory of every method at d = 2, 16, 64 (scripts/benchmark.py), alone
#      on the device so that the times are clean
#   2. pytest -m gpu (tests/test_gpu.py), side by side with
#   3. the paper budgets a CPU cannot afford, several jobs at once on the one device, least CPU
#      coverage first: T3 (mnist morphing) at budget=paper, T1a at budget=paper, one T5 cell;
#      each job writes its results.json when it ends, so a cut-off keeps the finished cells
#   4. the collector's tables of whatever finished
# Everything lands in $OUT (default outputs/gpu_check): report.md (all of it), gpu_check.log,
# runs.tar.gz (results.json, configs, logs and figures of every run; no checkpoints).
set -uo pipefail
cd "$(dirname "$0")/.."

LIMIT=540
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --limit) LIMIT="$2"; shift ;;
    --limit=*) LIMIT="${1#--limit=}" ;;
    *) echo "gpu_check.sh: unknown argument '$1'; use --dry-run and/or --limit SECONDS" >&2; exit 2 ;;
  esac
  shift
done

OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="${GPU_CHECK_WORK:-outputs/gpu_check_work}"
rm -rf "$WORK"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
LOG="$OUT/gpu_check.log"
REPORT="$OUT/report.md"
: >"$LOG"
START=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - START))); }
say() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
# run a stage with at most $1 seconds (never more than what is left minus a reserve for stage 4)
stage() {
  local budget=$1; shift
  local cap=$(($(left) - 20))
  [ "$budget" -gt "$cap" ] && budget=$cap
  if [ "$budget" -le 5 ]; then say "skipped (no time left): $*"; return 124; fi
  say "(${budget}s) $*"
  timeout --signal=TERM --kill-after=10 "$budget" "$@" >>"$LOG" 2>&1
  local rc=$?
  say "exit $rc"
  return $rc
}

# -- 0. environment -----------------------------------------------------------------------
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; fi
export PYTHONUNBUFFERED=1 WANDB_SILENT=true WANDB_MODE=offline
if ! "$PY" -c "import hydra, ot, pytorch_lightning, ot_experiments" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    say "installing the wheels in .whl/ into /tmp/otx-site (offline)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/otx-site .whl/*.whl >>"$LOG" 2>&1
    export PYTHONPATH="/tmp/otx-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    say "installing the project (pip install -e .)"
    "$PY" -m pip install -q -e . >>"$LOG" 2>&1
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - >>"$LOG" 2>&1 <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("devices:", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
EOF
if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  say "torch sees no CUDA device: install a CUDA build of torch (PyTorch's install selector gives the command), or pass --dry-run to check the script on the CPU"
  exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi >>"$LOG" 2>&1

if [ "$DRY" = 1 ]; then
  HW=cpu
  BENCH=(--dims 2 --steps 3 --points 500)
  T3=(budget=small trainer.max_steps=4 trainer.val_check_interval=2 method.batch_size=50
    network.modules=2 network.width=8 eval_points=100 mc_points=0 method.eval_points=100
    problem.source_digit=0 problem.target_digit=1)
  T1A=(budget=small trainer.max_steps=4 trainer.val_check_interval=2 method.n_mmd=100
    method.n_collocation=100 eval_points=200 mc_points=0 method.eval_points=200 inference_points=1000 d=2)
  T5=()  # the latent problem trains a VAE first: not part of the dry run
  JOBS=1
  XDIST=()
else
  HW=gpu
  BENCH=(--dims 2 16 64 --steps 30 --points 2000)
  T3=(budget=paper)
  T1A=(budget=paper)
  T5=(budget=paper problem.task=mnist_task2 method.conditional=true)
  JOBS=8
  XDIST=()
  "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 6)
fi
COMMON=(hardware=$HW threads=1 logger=csv hydra/launcher=joblib)

# -- 2. step time and memory of every method (first, on an idle device) -----------------
# BENCH_METHODS picks methods (default all four), e.g. BENCH_METHODS="qflow gradnet"
read -r -a BM <<<"${BENCH_METHODS:-ncf lagrangian gradnet qflow}"
if [ "${#BM[@]}" -gt 0 ]; then
  stage 240 "$PY" scripts/benchmark.py --hardware $HW --methods "${BM[@]}" "${BENCH[@]}" \
    --out "$WORK/benchmark"
fi

# -- 1 and 3. pytest -m gpu beside the paper budgets ----------------------------------------
# Each job spends ~10 s importing before it touches the device, and one small job leaves the
# device mostly idle, so the tests and the sweeps share it (their step times are not reported).
# PAPER picks the sweeps (default "t1a t5": T3 ran at the paper's budget on the 2-core CPU, all
# 25 pairs, 2026-12-01; add t3 to repeat it); T3_OVERRIDES narrows T3, e.g.
# T3_OVERRIDES="problem.source_digit=0,1,2 problem.target_digit=4".
PAPER_BUDGET=$(($(left) - 40))
pids=()
launch() {  # launch NAME OVERRIDES...: one sweep in the background, cut off with the stage
  local name=$1; shift
  say "launch $name: train.py -m $*"
  timeout --signal=TERM --kill-after=15 "$PAPER_BUDGET" "$PY" train.py -m "$@" "${COMMON[@]}" \
    "paths.output_root=$WORK/paper" "hydra.sweep.dir=$WORK/paper/$name" \
    >"$WORK/$name.log" 2>&1 &
  pids+=($!)
}
read -r -a T3X <<<"${T3_OVERRIDES:-}"
PAPER="${PAPER:-t1a t5}"
if [ "$PAPER_BUDGET" -gt 30 ]; then
  [[ " $PAPER " == *" t3 "* ]] && launch t3 experiment=t3 "${T3[@]}" "${T3X[@]}" "hydra.launcher.n_jobs=$JOBS"
  [[ " $PAPER " == *" t1a "* ]] && launch t1a experiment=t1a "${T1A[@]}" "hydra.launcher.n_jobs=$((JOBS > 6 ? 6 : JOBS))"
  if [[ " $PAPER " == *" t5 "* ]] && [ ${#T5[@]} -gt 0 ] && [ "$PAPER_BUDGET" -gt 400 ]; then
    launch t5 experiment=t5 "${T5[@]}" "problem.cache_dir=$WORK/cache" hydra.launcher.n_jobs=1
  fi
else
  say "skipped the paper budgets (no time left)"
fi
stage 200 "$PY" -m pytest -m gpu tests/test_gpu.py -v -p no:cacheprovider "${XDIST[@]}" \
  --junitxml="$WORK/pytest_gpu.xml"
for p in "${pids[@]}"; do wait "$p"; done
say "paper-budget sweeps ended"

# -- 4. tables and report -----------------------------------------------------------------
{
  echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), $([ "$DRY" = 1 ] && echo 'dry run, CPU' || echo "$HW"))"
  echo
  echo '```'
  grep -E "^(python|devices:)" "$LOG" | head -2
  echo '```'
  echo
  echo "## 1. pytest -m gpu"
  echo '```'
  grep -E "(PASSED|FAILED|ERROR|SKIPPED)" "$LOG" | grep "test_gpu.py::" | sed 's/^\[gw[0-9]*\] *//' | head -30
  grep -E "[0-9]+ (passed|failed|skipped)" "$LOG" | tail -1
  echo '```'
  echo
  echo "## 2. step time and memory"
  cat "$WORK/benchmark/report.md" 2>/dev/null | sed '1d' || echo "(no benchmark report)"
  echo
  echo "## 3. paper budgets"
  for name in t3 t1a t5; do
    [ -d "$WORK/paper/$name" ] || continue
    echo
    echo "### $name"
    n_ok=$(grep -l '"status": "ok"' "$WORK/paper/$name"/*/results.json 2>/dev/null | wc -l)
    echo "finished runs: $n_ok"
    echo
    "$PY" -m ot_experiments.tables "$WORK/paper/$name" 2>&1 | head -60
  done
  echo
  echo "total: $(($(date +%s) - START)) s of the $LIMIT s limit"
} >"$REPORT" 2>&1
cat "$REPORT"
(cd "$WORK" && find . \( -name results.json -o -name '*.log' -o -name config.yaml \
  -o -name overrides.yaml -o -name metrics.csv -o -name '*.png' -o -name '*.md' -o -name '*.xml' \) \
  -size -3M -print0 | tar --null -czf "$OUT/runs.tar.gz" -T -)
say "report: $REPORT; runs: $OUT/runs.tar.gz ($(du -h "$OUT/runs.tar.gz" | cut -f1))"
