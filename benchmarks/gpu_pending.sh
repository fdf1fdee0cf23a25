#!/usr/bin/env bash
# The GPU measurements of benchmarks/README.md ("GPU runs of 2026-11-23"), as device calls of under 10 minutes
# each (parts 1-11 run on an H100 by the fourth session; logs in results/gpu/). Run from the repo root on the GPU
# machine, with the wheels of fla-core 0.6.0, flash-linear-attention 0.6.0 and transformers 5.23.0 carried in
# .whl_ssm/ (see gpu_check_ssm.py):
#
#   bash benchmarks/gpu_pending.sh 1   # Based tile tunes (prefill, state pass) + Mamba-2 Triton SSD
#   bash benchmarks/gpu_pending.sh 2   # hazy families: CUDA-graph decode vs eager, parity
#   bash benchmarks/gpu_pending.sh 3   # GLA-1.3B: ours vs fla's own generate, same prompts (fla autotunes minutes)
#   bash benchmarks/gpu_pending.sh 4   # fused conv / norm kernels, prefill at N=32768, Mamba + Mamba-2 adapters
#   bash benchmarks/gpu_pending.sh 5   # GLA-1.3B again (fused norms): speed, parity (the anchor needs part 3)
#   bash benchmarks/gpu_pending.sh 6   # SSD prefill tile tune, fused add+norm, Mamba / Mamba-2 re-timed
#   bash benchmarks/gpu_pending.sh 7   # kernel tests on the GPU; the overlapped decode loop and the SSD default
#                                      # re-timed (Mamba, Mamba-2, hazy families)
#   bash benchmarks/gpu_pending.sh 8   # SSD prefill tile tune, then Mamba-2 parity and speed with the default
#                                      # (fourth session; first run with the chunk-parallel configs of 9e44f4f)
#   bash benchmarks/gpu_pending.sh 9   # (9e44f4f only) chunked vs sequential SSD per kernel and at batch 1-4;
#                                      # the skinny decode matmul against cuBLAS
#   bash benchmarks/gpu_pending.sh 10  # register caps (maxnreg: 3 programs per SM instead of 2) on the SSD prefill
#                                      # and the Based prefill / state pass
#   bash benchmarks/gpu_pending.sh 11  # (669fd7a only) split-bf16 SSD products; a Based readout variant
#   bash benchmarks/gpu_pending.sh 12  # GLA packed vs separate projections (same run), then GLA-1.3B against
#                                      # fla's own generate at 1900 tokens (fla autotunes for minutes first)
#   bash benchmarks/gpu_pending.sh 13  # Mamba-2 and Mamba with state_dtype=model (16-bit decode state, now the
#                                      # default) against the float32 state: speed, greedy agreement with fp32,
#                                      # transformers anchor
#   bash benchmarks/gpu_pending.sh 14  # 16-byte row loads in the conv / gated norm (row_align): kernels, then
#                                      # Mamba / Mamba-2 parity, Mamba-2 speed (both state dtypes) and profile
#   bash benchmarks/gpu_pending.sh 15  # the defaults of the fifth session (16-bit decode state, row_align): Mamba
#                                      # and Mamba-2 speed against transformers, 3 timed runs each, and profile
#   bash benchmarks/gpu_pending.sh 16  # Nsight Compute stall profile of the Based prefill and its state-only pass
#                                      # (sixth session; benchmarks/ncu_based.py, ncu_stalls.py)
#   bash benchmarks/gpu_pending.sh 17  # TMA tiles for the Based prefill / state pass: tune, headline, stall profile
#   bash benchmarks/gpu_pending.sh 19  # TMA defaults: JRT-RNN's parts, the prefill sweep (N 2048-32768, B 1-64)
#   bash benchmarks/gpu_pending.sh 21  # the sixth session's final code: headline, JRT-RNN's parts, GPU kernel tests,
#                                      # hazy families at 950 tokens (18 and 20, the same checks on intermediate
#                                      # versions, now run these)
#   bash benchmarks/gpu_pending.sh 22  # the same checks as 21, on the seventh session's code (JRT-RNN's state pass
#                                      # over key ranges by TMA windows, key_range in one launch)
#   bash benchmarks/gpu_pending.sh 23  # JRT-RNN's parts, then tile configs of its two launches (pla_parts.py --tune)
#   bash benchmarks/gpu_pending.sh 24  # part 19 (JRT-RNN's parts, the prefill sweep) on the seventh session's code
#   bash benchmarks/gpu_pending.sh 25  # GLA's forget gate by our Triton kernels vs PyTorch's ops: kernels, GLA-1.3B
#                                      # generate with fuse_gate on / off (same run), profile (benchmarks/gla_gate.py)
#   bash benchmarks/gpu_pending.sh 26  # GLA-1.3B greedy agreement bf16 vs fp32 on bf16-stored weights, ours and
#                                      # fla's own model (gpu_check_ssm.py agree_gla), then GLA parity on the GPU
#   bash benchmarks/gpu_pending.sh 27  # GLA's prefill with the state on chip vs fla's chunk_gla: one layer (errors,
#                                      # tile configs), GLA-1.3B generate A/B (gla_chunk.py); GLA parity, kernels
#   bash benchmarks/gpu_pending.sh 28  # end to end as a user runs it (benchmarks/gpu_e2e.py): the installed wheel and
#                                      # lm-eval's stock CLI; the CI small set on the GPU against the CPU baseline,
#                                      # paper-size checkpoints per family, one sweep. Carry .whl_eval/ (lm-eval 0.4.13
#                                      # and its missing dependencies, and this tree's own wheel, rebuilt first:
#                                      # `pip wheel --no-deps -w .whl_eval .`) and .whl_ssm/.
#
# Everything is written under $OUT (or ./gpu_pending_out), logs included.
set -uo pipefail
part=${1:?part 1 to 28}
out=${OUT:-gpu_pending_out}
mkdir -p "$out"
if [ "$part" = 28 ]; then
    # into the image's own environment, so that site-packages runs our startup hook (.pth) as a user's would
    python3 -m pip install -q --no-index --no-deps --no-compile .whl_eval/*.whl .whl_ssm/*.whl || exit 1
    site=$(cd /tmp && python3 -c "import jrt_eval, os; print(os.path.dirname(jrt_eval.__file__))")
    # the wheel must be this tree's (diff follows jrt_eval's links to kernels/, model_adapters/, tasks/)
    diff -rq -x __pycache__ -x _startup jrt_eval "$site" || { echo "rebuild .whl_eval's jrt-eval wheel" >&2; exit 1; }
    export PYTHONPATH=""
elif ls .whl_ssm/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl_ssm/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
export TRITON_CACHE_AUTOTUNING=1  # fla's autotuning, paid once per machine instead of once per process
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$out/gpu.txt"
case $part in
1)
    python3 benchmarks/prefill.py --tune --N 32768 --B 16 --best-out "$out/best_based_config.json" 2>&1 | tee "$out/tune.txt"
    python3 benchmarks/prefill.py --tune-state --N 32768 --B 16 2>&1 | tee "$out/tune_state.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only kernels,parity_mamba,speed_mamba2,profile \
        --deadline 300 2>&1 | tail -80
    ;;
2)
    python3 benchmarks/gpu_check_hazy.py --out "$out/hazy" --deadline 500 2>&1 | tail -60
    ;;
3)
    # anchor_gla alone times ours and fla's generate on the same prompts, each warmed at the timed shape
    python3 benchmarks/gpu_check_ssm.py --out "$out/gla" --only anchor_gla,profile --profile gla \
        --deadline 560 2>&1 | tail -60
    ;;
4)
    python3 benchmarks/ssm_fused.py --tune 2>&1 | tee "$out/ssm_fused.txt"
    python3 benchmarks/prefill.py --N 32768 --B 16 --impls ours_based@2N ours_pla@N fa2@N cudnn@N fla_fused_chunk@2N \
        --out "$out/bench_prefill_32k.csv" 2>&1 | tee "$out/prefill.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only parity_mamba,speed_mamba,speed_mamba2,profile \
        --deadline 360 2>&1 | tail -80
    ;;
5)
    python3 benchmarks/gpu_check_ssm.py --out "$out/gla" --only parity_gla,speed_gla,profile --profile gla \
        --deadline 560 2>&1 | tail -60
    ;;
6)
    python3 benchmarks/ssd.py 2>&1 | tee "$out/ssd_tune.txt"
    python3 benchmarks/ssm_fused.py 2>&1 | tee "$out/ssm_fused.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only parity_mamba,speed_mamba,speed_mamba2,profile \
        --deadline 330 2>&1 | tail -80
    ;;
7)
    python3 -m pytest -q -p no:cacheprovider tests/test_kernels_based_triton.py tests/test_kernels_ssd_triton.py \
        tests/test_mamba.py 2>&1 | tail -15 | tee "$out/pytest.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only parity_mamba,speed_mamba,speed_mamba2,profile \
        --deadline 200 2>&1 | tail -60
    python3 benchmarks/gpu_check_hazy.py --out "$out/hazy" --skip-parity --reps 1 --deadline 150 2>&1 | tail -30
    ;;
8)
    # the shipped default is timed (the tune's fastest is only reported: make it the default in the code first)
    python3 benchmarks/ssd.py --best-out "$out/best_ssd_config.json" 2>&1 | tee "$out/ssd_tune.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only parity_mamba,speed_mamba2,profile --profile mamba2 \
        --deadline 330 2>&1 | tail -60
    ;;
9)
    # Ran at commit 9e44f4f: the chunk-parallel SSD prefill and the skinny decode matmul it measured were dropped
    # after this run (results/gpu/ssd_chunked_breakdown_h100.txt, skinny_matmul_h100.txt). Rerun from that commit.
    echo "part 9 measured kernels that were dropped: git checkout 9e44f4f to rerun it" >&2
    exit 2
    ;;
10)
    for shape in "32 1900" "32 950" "8 1900" "1 2048"; do
        set -- $shape
        python3 benchmarks/ssd.py --B $1 --T $2 --configs '[{}, {"maxnreg": 168}, {"maxnreg": 168, "num_stages": 3}]' \
            2>&1 | tee -a "$out/ssd_maxnreg.txt"
    done
    python3 benchmarks/prefill.py --tune --N 32768 --B 16 --configs '[{}, {"maxnreg": 168}, {"maxnreg": 200}]' \
        2>&1 | tee "$out/based_maxnreg.txt"
    python3 benchmarks/prefill.py --tune-state --N 32768 --B 16 --configs '[{}, {"maxnreg": 168}, {"maxnreg": 128}]' \
        2>&1 | tee -a "$out/based_maxnreg.txt"
    ;;
11)
    # Ran at commit 669fd7a: split-bf16 SSD state products and a Based readout variant, both reverted after this
    # run (results/gpu/ssd_split_based_recip_h100.txt). Rerun from that commit.
    echo "part 11 measured kernel variants that were reverted: git checkout 669fd7a to rerun it" >&2
    exit 2
    ;;
12)
    (cd benchmarks && python3 gla_decode_pack.py) 2>&1 | tee "$out/gla_decode_pack.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/gla" --only anchor_gla --deadline 480 2>&1 | tail -20
    ;;
13)
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only speed_mamba2,speed_mamba --skip torch_ssd \
        --deadline 560 2>&1 | tail -60
    ;;
14)
    python3 benchmarks/ssm_fused.py 2>&1 | tee "$out/ssm_fused.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only parity_mamba,speed_mamba2,profile --profile mamba2 \
        --skip torch_ssd --deadline 400 2>&1 | tail -60
    ;;
15)
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only speed_mamba,speed_mamba2,profile --profile mamba2 \
        --skip torch_ssd --reps 3 --deadline 560 2>&1 | tail -70
    ;;
16)
    # Nsight Compute on the Based prefill (JRT-Prompt headline launch) and the state-only pass (JRT-RNN encoder):
    # details page and per-instruction stall samples (reports stay in /tmp: $OUT keeps the text)
    for what in prefill state; do
        ncu --clock-control none -k regex:_based_chunk_kernel --launch-skip 1 --launch-count 1 --set full \
            -f -o "/tmp/ncu_$what" python3 benchmarks/ncu_based.py --what "$what" 2>&1 | tail -4
        ncu --import "/tmp/ncu_$what.ncu-rep" --page details > "$out/ncu_${what}_details.txt" 2>&1
        ncu --import "/tmp/ncu_$what.ncu-rep" --page source --csv --print-source sass > "$out/ncu_${what}_sass.csv" 2>&1
        python3 benchmarks/ncu_stalls.py "$out/ncu_${what}_sass.csv" > "$out/ncu_${what}_stalls.txt" 2>&1
        grep -E "Duration|Registers|Achieved Occupancy|Issue Slots Busy|Executed Ipc A|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Hit|Warp Cycles Per Issued" \
            "$out/ncu_${what}_details.txt" | head -20
        head -60 "$out/ncu_${what}_stalls.txt"
    done
    ;;
17)
    # tensor-memory-accelerator tiles (config key "tma") for the Based prefill and its state-only pass: tile tune,
    # the headline against FA2 with TMA on, and the stall profile of the TMA prefill
    python3 benchmarks/prefill.py --tune --N 32768 --B 16 --configs '[
        {"BT": 64, "num_warps": 4, "num_stages": 2, "BLOCK_DV": 64, "kt": true, "sel16": true},
        {"BT": 64, "num_warps": 4, "num_stages": 2, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": true},
        {"BT": 64, "num_warps": 4, "num_stages": 3, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": true},
        {"BT": 64, "num_warps": 4, "num_stages": 1, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": true},
        {"BT": 64, "num_warps": 4, "num_stages": 2, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": "loads"},
        {"BT": 64, "num_warps": 4, "num_stages": 3, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": "loads"}]' \
        2>&1 | tee "$out/tune_tma.txt"
    python3 benchmarks/prefill.py --tune-state --N 32768 --B 16 --configs '[
        {"BT": 128, "num_warps": 4, "num_stages": 2, "BLOCK_DV": 64, "kt": true, "sel16": true},
        {"BT": 128, "num_warps": 4, "num_stages": 2, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": true},
        {"BT": 128, "num_warps": 4, "num_stages": 3, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": true},
        {"BT": 64, "num_warps": 4, "num_stages": 3, "BLOCK_DV": 64, "kt": true, "sel16": true, "tma": true}]' \
        2>&1 | tee "$out/tune_state_tma.txt"
    JRT_EVAL_BASED_CONFIG='{"tma": true}' JRT_EVAL_BASED_STATE_CONFIG='{"tma": true}' python3 benchmarks/prefill.py \
        --N 32768 --B 16 --impls ours_based@2N ours_pla@N fa2@N --out "$out/bench_prefill_tma.csv" 2>&1 | tail -12
    JRT_EVAL_BASED_CONFIG='{"tma": true}' ncu --clock-control none -k regex:_based_chunk_kernel --launch-skip 1 \
        --launch-count 1 --set full -f -o /tmp/ncu_tma python3 benchmarks/ncu_based.py --what prefill 2>&1 | tail -2
    ncu --import /tmp/ncu_tma.ncu-rep --page source --csv --print-source sass > /tmp/ncu_tma_sass.csv 2>&1
    python3 benchmarks/ncu_stalls.py /tmp/ncu_tma_sass.csv --top 25 > "$out/ncu_tma_stalls.txt" 2>&1
    ncu --import /tmp/ncu_tma.ncu-rep --page details 2>&1 | grep -E "Duration|Issue Slots Busy|Registers Per|Local Memory Spilling Requests " 
    sed -n 2,60p "$out/ncu_tma_stalls.txt"
    ;;
19 | 24)
    # JRT-RNN's two launches timed apart, then the prefill sweep: N 2048 / 8192 / 32768 x B 1 / 4 / 16 / 64 (19 on the
    # sixth session's code, 24 on the seventh's)
    python3 benchmarks/pla_parts.py 2>&1 | tee "$out/pla_parts.txt"
    python3 benchmarks/prefill.py --N 2048 8192 32768 --B 1 4 16 64 --impls ours_based@2N ours_pla@N fa2@N \
        fla_fused_chunk@2N --out "$out/bench_prefill.csv" 2>&1 | tail -24
    ;;
18 | 20 | 21 | 22)
    # the code of the day: headline, JRT-RNN's parts, kernel tests on the GPU, hazy families' parity and speed at 950
    # tokens (parts 18 and 20 ran these checks on intermediate versions of the sixth session's code, 21 on its final
    # code, 22 on the seventh session's)
    python3 benchmarks/prefill.py --N 32768 --B 16 --impls ours_based@2N ours_based@N ours_pla@N fa2@N cudnn@N \
        fla_fused_chunk@2N --out "$out/bench_prefill_headline.csv" 2>&1 | tail -8
    python3 benchmarks/pla_parts.py 2>&1 | tee "$out/pla_parts.txt"
    python3 -m pytest -q -p no:cacheprovider tests/test_kernels_based_triton.py 2>&1 | tail -4 | tee "$out/pytest.txt"
    python3 benchmarks/gpu_check_hazy.py --out "$out/hazy" --reps 1 --lengths 950 --deadline 150 2>&1 | tail -30
    ;;
23)
    python3 benchmarks/pla_parts.py 2>&1 | tee "$out/pla_parts.txt"
    python3 benchmarks/pla_parts.py --tune --deadline 420 2>&1 | tee "$out/pla_tune.txt"
    ;;
25)
    (cd benchmarks && python3 gla_gate.py) 2>&1 | tee "$out/gla_gate.txt"
    ;;
26)
    python3 benchmarks/gpu_check_ssm.py --out "$out/agree" --only agree_gla,parity_gla,kernels --deadline 540 \
        2>&1 | tail -40
    ;;
27)
    (cd benchmarks && python3 gla_chunk.py) 2>&1 | tee "$out/gla_chunk.txt"
    python3 benchmarks/gpu_check_ssm.py --out "$out/ssm" --only kernels,parity_gla --deadline 300 2>&1 | grep gla
    ;;
28)
    (cd /tmp && python3 "$OLDPWD/benchmarks/gpu_e2e.py" --out "$out/e2e" --deadline 540) 2>&1 | tee "$out/e2e.txt"
    ;;
*)
    echo "part must be 1 to 28" >&2
    exit 2
    ;;
esac
