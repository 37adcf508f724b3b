#!/usr/bin/env bash
# Everything GPU-side for issue 15, as one prepared script: dlrun vs a hand loop vs bare Lightning on the card
# (bench/gpu/overhead.py), the mnist_cnn preset (12 epochs) and the multi30k_gru_attn preset timed with their
# test metrics (bench/gpu/presets.py); then docs/gpu.md's measured block is rewritten (bench/gpu/report.py).
#
#   bash bench/gpu/check.sh core    # what the issue's targets need (~6-7 min): MNIST MLP/CNN at 128/1024,
#                                   #   fp32/bf16, dlrun vs hand vs Lightning + phase table; mnist_cnn preset
#                                   #   (fp32; bf16+compiled); multi30k_gru_attn preset (12 epochs, BLEU)
#   bash bench/gpu/check.sh extra   # compiled MNIST cases; seq2seq tokens/s overhead, eager and compiled (~6 min)
#   bash bench/gpu/check.sh all     # both, one after the other (~13 min: more than one 10-minute command)
#   bash bench/gpu/check.sh smoke   # every step at toy sizes on the CPU (checks the plumbing; no GPU)
#
# Each of core and extra fits one 10-minute command; every step has its own time limit, and a step cut
# short keeps the cases it finished (results are written after each). With little device time, run core.
# Results: bench/results/gpu/*.json, logs beside them; docs/gpu.md is rewritten from whatever results exist,
# so the parts can run in separate calls. When $OUT is a folder (a remote runner's pick-up folder),
# docs/gpu.md, the JSON files and the logs are copied there.
#
# Needs python3 with CUDA torch, pytorch-lightning, torchmetrics, numpy, PyYAML, rich. No network, no MLflow
# (tracking=none everywhere). Missing pure-Python packages (hydra-core, omegaconf, antlr4, sacrebleu and its
# small deps) are installed offline into $SITE from bench/wheels/, made beforehand on a machine with network:
#   pip download --no-deps -d bench/wheels hydra-core==1.3.8 omegaconf==2.3.1 sacrebleu==2.6.0 \
#       portalocker==3.2.0 tabulate colorama
#   pip wheel --no-deps -w bench/wheels antlr4-python3-runtime==4.9.3
# Data: $DLRUN_DATA_DIR, else ./data, else ../shared/data (mnist/ and multi30k/ inside; 13 MB). For a machine
# that gets only the repository: mkdir -p data && cp -r ../shared/data/{mnist,multi30k} data/ and send data/.
# Env: PYTHON (default python3), SITE (default /tmp/dlrun-site).
set -uo pipefail

PART=${1:-all}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/dlrun-site}
RESULTS=$ROOT/bench/results/gpu
mkdir -p "$RESULTS"

for candidate in "${DLRUN_DATA_DIR:-}" "$ROOT/data" "$ROOT/../shared/data"; do
    if [ -n "$candidate" ] && [ -f "$candidate/mnist/train-images-idx3-ubyte.gz" ]; then DATA=$candidate; break; fi
done
if [ -z "${DATA:-}" ]; then
    echo "gpu/check.sh: no data: set DLRUN_DATA_DIR to a folder holding mnist/ and multi30k/ (or copy them to $ROOT/data)" >&2
    exit 2
fi
export DLRUN_DATA_DIR=$(cd "$DATA" && pwd)

# Install what is missing from bench/wheels (module name -> wheel file prefix), without network.
missing=()
for pair in hydra:hydra_core omegaconf:omegaconf antlr4:antlr4_python3_runtime sacrebleu:sacrebleu \
            portalocker:portalocker tabulate:tabulate colorama:colorama; do
    module=${pair%%:*}; wheel=${pair#*:}
    if ! "$PY" -c "import $module" 2>/dev/null; then
        found=$(ls "$ROOT"/bench/wheels/"$wheel"-*.whl 2>/dev/null | head -1)
        if [ -z "$found" ]; then
            echo "gpu/check.sh: python module '$module' missing and no bench/wheels/$wheel-*.whl (see the header)" >&2
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

if [ "$PART" = smoke ]; then
    DEVICE=(--smoke)
else
    "$PY" -c "import torch; assert torch.cuda.is_available(); print('GPU:', torch.cuda.get_device_name(0), 'torch', torch.__version__, 'CUDA', torch.version.cuda)" \
        || { echo "gpu/check.sh: torch sees no CUDA GPU" >&2; exit 2; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$RESULTS/nvidia_smi.txt" 2>/dev/null || true
    DEVICE=()
fi

status=0
# name, seconds, command...: run one step with a time limit, its output in $RESULTS/<name>.log.
step() {
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local started=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    local rc=$?
    echo "   -> exit $rc after $((SECONDS - started)) s; last lines:"
    tail -n 4 "$RESULTS/$name.log" | sed 's/^/   /'
    [ $rc -eq 0 ] || status=1
}

B="$ROOT/bench/gpu"
case $PART in core|extra|all|smoke) ;; *) echo "gpu/check.sh: part must be core, extra, all or smoke, got '$PART'" >&2; exit 2;; esac
if [ "$PART" = core ] || [ "$PART" = all ] || [ "$PART" = smoke ]; then
    step overhead_mnist 170 "$PY" "$B/overhead.py" "${DEVICE[@]}" --cases mnist --compile off \
        --json "$RESULTS/overhead_mnist.json"
    if [ "$PART" = smoke ]; then
        step presets 200 "$PY" "$B/presets.py" --smoke --json "$RESULTS/presets.json"
    else
        step presets 330 "$PY" "$B/presets.py" --timeout 240 --json "$RESULTS/presets.json"
    fi
fi
if [ "$PART" = extra ] || [ "$PART" = all ] || [ "$PART" = smoke ]; then
    step overhead_mnist_compiled 240 "$PY" "$B/overhead.py" "${DEVICE[@]}" --cases mnist --compile on \
        --precisions 32-true --phases off --json "$RESULTS/overhead_mnist_compiled.json"
    step overhead_seq2seq 150 "$PY" "$B/overhead.py" "${DEVICE[@]}" --cases seq2seq --compile off,on --phases off \
        --steps 100 --skip 20 --repeats 2 --json "$RESULTS/overhead_seq2seq.json"
fi

DOC=$ROOT/docs/gpu.md
[ "$PART" = smoke ] && DOC=$RESULTS/gpu_smoke.md && cp "$ROOT/docs/gpu.md" "$DOC"
"$PY" "$B/report.py" "$RESULTS" --out "$DOC" || status=1
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    mkdir -p "$OUT/gpu"
    cp "$RESULTS"/*.json "$RESULTS"/*.log "$OUT/gpu/" 2>/dev/null
    cp "$RESULTS"/nvidia_smi.txt "$OUT/gpu/" 2>/dev/null
    cp "$DOC" "$OUT/"
fi
echo "--- done (exit $status); results in $RESULTS, report in $DOC"
exit $status
