#!/usr/bin/env bash
# GPU check: short MNIST CNN trainings (fp32 and bf16-mixed) and a short Multi30k GRU-attention seq2seq
# training on one CUDA GPU; prints samples/s, tokens/s and peak GPU memory. About 3 minutes on an H100.
#
#   bash bench/gpu_check.sh                 # from anywhere; results also in bench/results/gpu_check.txt
#
# Needs python3 with CUDA torch, pytorch-lightning, torchmetrics, numpy, matplotlib, rich, PyYAML. No
# network and no mlflow needed (runs use tracking=none). Packages missing there (hydra-core, omegaconf,
# antlr4, sacrebleu) are installed offline into a scratch folder from bench/wheels/, made beforehand on a
# machine with network, from the repository root:
#   pip download --no-deps -d bench/wheels hydra-core==1.3.8 omegaconf==2.3.1 sacrebleu==2.6.0
#   pip wheel --no-deps -w bench/wheels antlr4-python3-runtime==4.9.3     # sdist only on PyPI: build it here
# Data: $DLRUN_DATA_DIR, else ./data, else ../shared/data (mnist/ and multi30k/ inside). On a machine that
# gets only the repository, copy them in first: mkdir -p data && cp -r ../shared/data/{mnist,multi30k} data/
# Env: PYTHON (default python3), PRECISION (default bf16-mixed), SITE (default /tmp/dlrun-site).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
PRECISION=${PRECISION:-bf16-mixed}
SITE=${SITE:-/tmp/dlrun-site}
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu_check.log
SUMMARY=$RESULTS/gpu_check.txt
: >"$LOG"

for candidate in "${DLRUN_DATA_DIR:-}" "$ROOT/data" "$ROOT/../shared/data"; do
    if [ -n "$candidate" ] && [ -f "$candidate/mnist/train-images-idx3-ubyte.gz" ]; then DATA=$candidate; break; fi
done
if [ -z "${DATA:-}" ]; then
    echo "gpu_check: no data: set DLRUN_DATA_DIR to a folder holding mnist/ and multi30k/ (or copy them to $ROOT/data)" >&2
    exit 2
fi
export DLRUN_DATA_DIR=$(cd "$DATA" && pwd)

# Install what is missing from bench/wheels (module name -> wheel file prefix), without network.
missing=()
for pair in hydra:hydra_core omegaconf:omegaconf antlr4:antlr4_python3_runtime sacrebleu:sacrebleu; do
    module=${pair%%:*}; wheel=${pair#*:}
    if ! "$PY" -c "import $module" 2>/dev/null; then
        found=$(ls "$ROOT"/bench/wheels/"$wheel"-*.whl 2>/dev/null | head -1)
        if [ -z "$found" ]; then
            echo "gpu_check: python module '$module' missing and no bench/wheels/$wheel-*.whl (see the header of this script)" >&2
            exit 2
        fi
        missing+=("$found")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing into $SITE: ${missing[*]##*/}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${missing[@]}" || exit 2
fi
export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PY" - <<'EOF' || { echo "gpu_check: torch sees no CUDA GPU" >&2; exit 2; }
import torch
assert torch.cuda.is_available()
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

# One dlrun training in a fresh process; prints PEAK_GPU_GIB at exit (the whole fit + test).
train() {
    "$PY" - "$@" <<'EOF'
import atexit, sys, time
import torch

start = time.perf_counter()

def report():
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_initialized() else float("nan")
    print(f"PEAK_GPU_GIB {peak:.2f}  WALL_S {time.perf_counter() - start:.0f}", flush=True)

atexit.register(report)
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
main()
EOF
}

# name, unit (samples|tokens), overrides...: run, then pull throughput and metrics from the epoch lines.
check() {
    local name=$1 unit=$2; shift 2
    echo "== $name: dlrun $*" | tee -a "$LOG"
    local out rc
    out=$(cd "$RESULTS" && train "$@" tracking=none 2>&1); rc=$?
    printf '%s\n' "$out" >>"$LOG"
    local last peak rate
    last=$(printf '%s\n' "$out" | grep '^epoch ' | tail -1)
    peak=$(printf '%s\n' "$out" | grep -o 'PEAK_GPU_GIB .*' | tail -1)
    rate=$(printf '%s\n' "$last" | grep -o "train/${unit}_per_s [0-9.e+]*" | awk '{print $2}')
    if [ $rc -ne 0 ]; then
        echo "$name: FAILED (exit $rc): $(printf '%s\n' "$out" | grep 'dlrun: error' | tail -1)" | tee -a "$SUMMARY"
        return $rc
    fi
    echo "$name: ${rate:-?} ${unit}/s, $peak | $last" | tee -a "$SUMMARY"
}

: >"$SUMMARY"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0))" >>"$SUMMARY"
status=0
mnist=(experiment=mnist_cnn trainer=gpu trainer.max_epochs=2 data.batch_size=256 data.pin_memory=true)
check "mnist-cnn fp32" samples "${mnist[@]}" trainer.precision=32-true || status=1
check "mnist-cnn $PRECISION" samples "${mnist[@]}" trainer.precision="$PRECISION" || status=1
seq2seq=(experiment=multi30k_gru_attn trainer=gpu trainer.max_epochs=1 trainer.limit_train_batches=150
         trainer.limit_val_batches=4 trainer.limit_test_batches=4)
if ! check "multi30k-gru-attn $PRECISION" tokens "${seq2seq[@]}" trainer.precision="$PRECISION"; then
    # cuDNN's GRU may refuse a precision on some builds: fall back so the tokens/s number still comes out.
    check "multi30k-gru-attn fp32" tokens "${seq2seq[@]}" trainer.precision=32-true || status=1
fi
echo "--- summary ($SUMMARY; full log $LOG)"
cat "$SUMMARY"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then cp "$SUMMARY" "$LOG" "$OUT"/; fi  # a remote runner's pick-up folder
exit $status
