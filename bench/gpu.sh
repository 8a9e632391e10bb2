#!/usr/bin/env bash
# The GPU figures in one go, on a machine with one CUDA GPU: the benches against the original codes at the paper's
# sizes in fp32 and bf16 autocast, evoray's NCHW against its default channels-last, and EvNAS generations through a
# Ray actor on the GPU checked against the CPU. Each part has a time limit of its own, so one failure leaves the
# others' figures; every part's output goes to LOG_DIR/<part>.log and a summary of the ratios is printed last.
#
#     bench/gpu.sh DARTS_ROOT AUTODL_ROOT EVNAS_ROOT [LOG_DIR]
#
# DARTS_ROOT: a checkout of the original DARTS code (quark0/darts); AUTODL_ROOT: of AutoDL-Projects; EVNAS_ROOT: of
# nightstorm0909/EvNAS. PYTHON names the interpreter (default: python), PARTS the parts to run (default: all, the
# most wanted first). The limits add up to 25 minutes (on an H200 a part's setup and warm-up took longer than its
# timed rounds); a part's log says where it stopped.
set -u
if [ $# -lt 3 ]; then
    echo "usage: bench/gpu.sh DARTS_ROOT AUTODL_ROOT EVNAS_ROOT [LOG_DIR]" >&2
    exit 2
fi
log=${4:-gpu-logs}
mkdir -p "$log" || exit 2
darts=$(realpath "$1")/cnn autodl=$(realpath "$2") evnas=$(realpath "$3") log=$(realpath "$log")
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1
py=${PYTHON:-python}

all="actor supernet-fp32 evnas-fp32 gdas-nb201-fp32 gdas-darts-fp32 supernet-bf16 gdas-nb201-bf16 evnas-bf16
supernet-nchw"
parts=${PARTS:-$all}  # PARTS="actor evnas-fp32": only those, in this script's order
for name in $parts; do
    case " $(echo $all) " in *" $name "*) ;; *) echo "unknown part $name; valid: $(echo $all)" >&2 && exit 2 ;; esac
done

part() {  # part NAME SECONDS COMMAND...: run COMMAND with a time limit, its output shown and kept in LOG_DIR/NAME.log
    local name=$1 limit=$2
    shift 2
    case " $(echo $parts) " in *" $name "*) ;; *) return ;; esac
    echo "== $name ($limit s at most): $*"
    local start=$SECONDS
    timeout "$limit" "$@" >"$log/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$log/$name.log"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv 2>&1 | tee "$log/gpu.log"
supernet=($py bench/supernet.py --device cuda --sizes paper --steps 10 --rounds 3)
gdas=($py bench/gdas.py --device cuda --original "$autodl" --C 16 --side 32 --steps 10 --rounds 5 --draws 8)
evnas=($py bench/evnas.py --device cuda --original "$evnas" --C 16 --cells 8 --side 32 --batch 64 --rounds 3
    --population 8 --train-images 1280 --valid-images 2048)
# the most wanted first, for a short lease
part actor 180 $py bench/gpu_actor.py --generations 2
part supernet-fp32 300 "${supernet[@]}" --original "$darts"
part evnas-fp32 120 "${evnas[@]}"
part gdas-nb201-fp32 120 "${gdas[@]}" --spaces nb201 --N 5 --batch 64
part gdas-darts-fp32 150 "${gdas[@]}" --spaces darts --N 2 --batch 256
part supernet-bf16 300 "${supernet[@]}" --original "$darts" --precision bf16
part gdas-nb201-bf16 120 "${gdas[@]}" --spaces nb201 --N 5 --batch 64 --precision bf16
part evnas-bf16 120 "${evnas[@]}" --precision bf16
part supernet-nchw 90 "${supernet[@]}" --modes softmax --no-channels-last

echo "== summary"
for name in $parts; do
    echo "-- $name"
    grep -E "speed-up|evoray / original|^PASS|^FAIL|actor: device|^generation|^untrained|^(evoray|original)[ /]" \
        "$log/$name.log"
done
