#!/usr/bin/env bash
# One GPU's measurements of the research configs, in under 8 minutes, into one table:
# benchmarks/results/scale_gpu.md (and $OUT/scale_gpu.md with its log, when $OUT is set).
#
#     bash benchmarks/accelerator.sh              # on one H200: real sizes, bfloat16
#     bash benchmarks/accelerator.sh --dry-run    # any machine: every step at tiny sizes
#     bash benchmarks/accelerator.sh --dry-run --wheels   # ... installing .whl/ as there
#
# Made for a machine without network whose Python 3.12 holds jax (with CUDA), flax, optax,
# orbax and the scientific stack but not this project's other dependencies: those come as
# wheels in .whl/ (benchmarks/accelerator_wheels.sh downloads them), installed with
# --no-deps into /tmp/lsdm_site, and the repository goes on PYTHONPATH. Steps, each
# under its own time limit (and the time left of the whole), each printing its progress:
#   install   the wheels (not in a dry run without --wheels)          60 s
#   device    JAX's version and device; a GPU unless --dry-run          60 s
#   scale     benchmarks/scale.py's measurements of cifar10_classcond at its real sizes,
#             its global batches on one device                         120 s
#   mock      cifar10_classcond at real model size on TFDS mock data: both stages for a few
#             hundred steps, finite losses, steps/s, MFU, peak memory; generation  170 s
#   scale     the same of celeba64_attributes                          120 s
#             (celeba_superres has its stage 1 and a 7% larger stage 2)
#   report    the table, with every failed or skipped step named       30 s
# The exit status is non-zero if any step failed, ran out of time or was skipped.
# Python: $PYTHON, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
wheels=0
for arg in "$@"; do
  case $arg in
    --dry-run) dry=1 ;;
    --wheels) wheels=1 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
[[ $dry == 0 ]] && wheels=1
python=${PYTHON:-python3}
slow=1
[[ $dry == 1 ]] && slow=4  # A dry run's limits: tiny steps on 2 CPU cores compile slowly.
budget=$((470 * slow))  # Seconds for everything; the report's 30 are kept back.
start=$SECONDS
results=$(mktemp -d)
log=$results/accelerator.log
status=$results/status.txt
: > "$status"
export PYTHONUNBUFFERED=1
if [[ $dry == 1 ]]; then
  out_md=$results/scale_dry_run.md
  dry_flag=--dry-run
else
  out_md=benchmarks/results/scale_gpu.md
  dry_flag=
fi

# step NAME LIMIT COMMAND...: runs COMMAND under min(LIMIT x slow, time left), records its
# status.
step() {
  local name=$1 limit=$(($2 * slow))
  shift 2
  local left=$((budget - (SECONDS - start)))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "== $name: skipped, $left s left of $budget" | tee -a "$log"
    echo "$name 125 skipped: out of time" >> "$status"
    return 1
  fi
  echo "== [$((SECONDS - start)) s] $name (limit $limit s)" | tee -a "$log"
  local t=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  local note="exit $rc"
  ((rc == 124 || rc == 137)) && note="ran past its $limit s"
  echo "$name $rc $note" >> "$status"
  echo "== $name: exit $rc after $((SECONDS - t)) s" | tee -a "$log"
  return "$rc"
}

if [[ $wheels == 1 ]]; then
  ls .whl/*.whl > /dev/null || { echo "no wheels in .whl/: run benchmarks/accelerator_wheels.sh" >&2; exit 1; }
  step install 60 "$python" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/lsdm_site .whl/*.whl || true
  export PYTHONPATH=/tmp/lsdm_site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
py=("$python" benchmarks/accelerator.py)
args=(--dir="$results" $dry_flag)

step device 60 "${py[@]}" device "${args[@]}"
steps=(scale_cifar10_classcond mock scale_celeba64_attributes)
if grep -q "^device 0 " "$status"; then  # The end-to-end run before the second config.
  step scale_cifar10_classcond 120 "${py[@]}" scale cifar10_classcond "${args[@]}"
  step mock 170 "${py[@]}" mock "${args[@]}"
  step scale_celeba64_attributes 120 "${py[@]}" scale celeba64_attributes "${args[@]}"
else
  printf '%s 125 skipped: the device step failed\n' "${steps[@]}" >> "$status"
fi
budget=$((budget + 30 * slow))
step report 30 "${py[@]}" report --out="$out_md" "${args[@]}"
rc=$?
if [[ -n ${OUT:-} ]]; then
  cp "$out_md" "$OUT/scale_gpu.md" 2>/dev/null
  cp "$log" "$OUT/accelerator.log"
fi
echo "== done in $((SECONDS - start)) s; table: $out_md"
awk '$2 != 0 { bad = 1 } END { exit bad }' "$status" && exit "$rc"
exit 1
