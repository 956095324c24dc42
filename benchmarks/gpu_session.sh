#!/usr/bin/env bash
# One session on a fresh CUDA machine without network: install, check, measure, train one epoch.
#
#   make gpu-wheels                   # here, once: fills the git-ignored gpu-wheels/
#   bash benchmarks/gpu_session.sh    # there, from the repository root, gpu-wheels/ carried along
#
# Steps, each under its own time limit and logged to $OUT/<step>.log; a failing step does not
# stop the next ones, and the whole session stays under TOTAL_S seconds (default 560):
#   install     the carried wheels and this package (built from a copy of the sources) into a
#               target folder put on PYTHONPATH; the machine's own python3 keeps its torch
#   nvidia-smi  the card, its driver and what torch sees
#   tests       `pytest -m cuda`, then the Triton and autocast tests and the models' CUDA tests,
#               compiled for the card (TRITON_INTERPRET unset)
#   bench       benchmarks/gpu.py --budget-s BENCH_BUDGET_S -> $OUT/benchmarks-gpu.md
#   train       one epoch of recon-train experiment=pretrain_base on synthetic data, bf16
# and $OUT/summary.txt last: at most 7 files in $OUT, so that a runner which returns only a
# handful of files (8, say) returns them all.
#
# Settings (environment): OUT (default outputs/gpu-session), PYTHON (python3), TOTAL_S (560),
# BENCH_BUDGET_S (210), STEPS (which steps, in order; default all five), TRAIN_SIZE (2560),
# GPU_WHEELS (gpu-wheels), RECON_GPU_WORK (scratch folder, /tmp/recon-gpu).
set -u -o pipefail

cd "$(dirname "$0")/.."
export OUT="${OUT:-outputs/gpu-session}"
export PY="${PYTHON:-python3}"
export WHEELS="${GPU_WHEELS:-gpu-wheels}"
# Scratch space outside the checkout: the install, the package build, KeOps' cache, the run.
export WORK="${RECON_GPU_WORK:-/tmp/recon-gpu}"
export SITE="$WORK/site"
export BENCH_BUDGET_S="${BENCH_BUDGET_S:-210}"
export TRAIN_SIZE="${TRAIN_SIZE:-2560}"
TOTAL_S="${TOTAL_S:-560}"
STEPS="${STEPS:-install nvidia-smi tests bench train}"
mkdir -p "$OUT"

# Every step: our install first on the path; offline; quiet KeOps with its cache in $WORK; Triton
# compiling for the card, never interpreting.
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled MPLBACKEND=Agg
export KEOPS_CACHE_FOLDER="${KEOPS_CACHE_FOLDER:-$WORK/keops}"
unset TRITON_INTERPRET

step_install() {
    set -e
    echo "python: $(command -v "$PY") ($("$PY" -V 2>&1))"
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "no wheels in $WHEELS: run 'make gpu-wheels' and carry the folder"
        exit 1
    fi
    du -sh "$WHEELS"
    rm -rf "$SITE" "$WORK/src" "$WORK/dist"
    mkdir -p "$SITE" "$WORK/src"
    # setuptools is only for building our wheel below: not on the path of the runs.
    local wheels
    wheels=$(ls "$WHEELS"/*.whl | grep -v '/setuptools-')
    # shellcheck disable=SC2086  # one argument per wheel
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --disable-pip-version-check --target "$SITE" $wheels
    # Our package from a copy of its sources (no build/ or egg-info in the checkout), built with
    # the carried setuptools (the project needs >= 77); the machine's own if that fails.
    tar --exclude=__pycache__ --exclude='*.egg-info' -cf - \
        pyproject.toml setup.py README.md LICENSE src conf | tar -xf - -C "$WORK/src"
    "$PY" -m pip wheel -q --no-deps --no-index --find-links "$WHEELS" \
        --disable-pip-version-check -w "$WORK/dist" "$WORK/src" \
        || "$PY" -m pip wheel -q --no-deps --no-build-isolation \
            --disable-pip-version-check -w "$WORK/dist" "$WORK/src"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
        --target "$SITE" "$WORK"/dist/recon_lightning-*.whl
    "$PY" - <<'EOF'
import importlib
import sys

names = [
    "recon_lightning", "recon_lightning.conf", "recon_lightning.models", "recon_lightning.ops",
    "recon_lightning.teachers", "recon_lightning.tasks.pretrain", "recon_lightning.cli.train",
    "hydra", "omegaconf", "hydra_plugins.hydra_submitit_launcher", "open_clip", "pykeops",
    "pykdtree.kdtree", "torch", "triton", "lightning", "timm", "numba", "pytest", "xdist",
]
failed = 0
for name in names:
    try:
        mod = importlib.import_module(name)
    except Exception as err:  # report every missing piece, not only the first
        failed += 1
        print(f"FAIL {name}: {type(err).__name__}: {err}")
        continue
    print(f"ok   {name:40s} {getattr(mod, '__version__', '')}  {getattr(mod, '__file__', '')}")
sys.exit(1 if failed else 0)
EOF
}

step_nvidia_smi() {
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit \
        --format=csv
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
}

step_tests() {
    local rc=0
    # Every test marked cuda (a collection error elsewhere, a module needing a package the
    # machine lacks, must not stop them), then the Triton and autocast suites whole (their CPU
    # interpreter tests too) and the models' CUDA comparisons, which carry no marker.
    "$PY" -m pytest -q -p no:cacheprovider -n 8 -m cuda --continue-on-collection-errors tests \
        || rc=1
    "$PY" -m pytest -q -p no:cacheprovider -n 8 -m "not cuda" tests/ops/test_triton.py \
        tests/ops/test_autocast.py tests/models/test_encoder.py::test_cuda_matches_cpu \
        tests/models/test_pretrainer.py::test_pretrainer_on_cuda_matches_cpu || rc=1
    return $rc
}

step_bench() {
    "$PY" benchmarks/gpu.py --device cuda --budget-s "$BENCH_BUDGET_S" \
        --out "$OUT/benchmarks-gpu.md"
}

step_train() {
    # pretrain_base's data.whole belongs to ShapeNet-55: removed for the synthetic data. Run
    # folder, logs and checkpoints stay in $WORK; the log goes to $OUT.
    "$PY" -m recon_lightning.cli.train experiment=pretrain_base teachers=random data=synthetic \
        '~data.whole' trainer=gpu trainer.max_epochs=1 trainer.precision=bf16-mixed \
        data.train_size="$TRAIN_SIZE" data.num_workers=8 hydra.run.dir="$WORK/train"
}

export -f step_install step_nvidia_smi step_tests step_bench step_train

# name -> (function, time limit in seconds); the limits add up to TOTAL_S's default.
declare -A FN=([install]=step_install [nvidia-smi]=step_nvidia_smi [tests]=step_tests
    [bench]=step_bench [train]=step_train)
declare -A LIMIT=([install]=60 [nvidia-smi]=20 [tests]=120 [bench]=280 [train]=80)
summary=()
failed=0

for name in $STEPS; do
    if [[ -z "${FN[$name]:-}" ]]; then
        summary+=("$name: unknown step (choose from ${!FN[*]})")
        failed=1
        continue
    fi
    left=$((TOTAL_S - SECONDS - 5))
    limit=${LIMIT[$name]}
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        summary+=("$name: SKIPPED (session time spent)")
        failed=1
        continue
    fi
    echo "== $name (limit ${limit} s)"
    start=$SECONDS
    timeout -k 10 "$limit" bash -c "${FN[$name]}" >"$OUT/$name.log" 2>&1
    rc=$?
    took=$((SECONDS - start))
    if ((rc == 0)); then
        status="ok"
    elif ((rc == 124 || rc == 137)); then
        status="TIMEOUT after ${limit} s"
        failed=1
    else
        status="FAILED (exit $rc)"
        failed=1
    fi
    last=$(grep -v '^[[:space:]]*$' "$OUT/$name.log" | tail -n 1 | cut -c1-160)
    summary+=("$name: $status in ${took} s | $last")
    echo "   $status in ${took} s"
done

{
    echo "gpu_session.sh: ${SECONDS} s of ${TOTAL_S} s; steps: $STEPS"
    printf '%s\n' "${summary[@]}"
} | tee "$OUT/summary.txt"
exit $failed
