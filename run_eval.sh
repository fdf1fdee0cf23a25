#!/usr/bin/env bash
# run_eval.sh: every (model, task) cell of a model set through lm-eval with jrt-eval, resumable.
# A thin wrapper over `jrt-eval sweep` (jrt_eval/sweep.py); every sweep option passes through.
#
#   ./run_eval.sh                                        # paper Table 1: 16 models x 12 tasks, all GPUs here
#   ./run_eval.sh --models paper-table2                  # paper Table 2 (JRT-RNN), 512/1024/2048 + NQ at 2000
#   ./run_eval.sh --models small --out results/ci-small  # tiny offline checkpoints on the bundled samples
#   ./run_eval.sh --models paper-table1 --devices 0,1    # pin workers to GPUs 0 and 1 (one worker each)
#   ./run_eval.sh --models paper-table1 --ray-address auto   # fan out over a Ray cluster
#   ./run_eval.sh --help                                 # all options
#
# Defaults when not given: --models paper-table1, --out results/<models>-<UTC date-time>. Rerun the
# same command with the same --out to resume: finished cells are skipped. The run folder ends with
# leaderboard.csv, summary.csv/.md and leaderboard.png. Exit status as `jrt-eval sweep`.
# Python: $PYTHON, else the repository's .venv, else python3 (jrt-eval must be installed there).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then python="$here/.venv/bin/python"; else python="python3"; fi
fi

models="" out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --models) models="${args[i + 1]:-}" ;;
    --models=*) models="${args[i]#--models=}" ;;
    --out) out="${args[i + 1]:-}" ;;
    --out=*) out="${args[i]#--out=}" ;;
    -h | --help | --list) exec "$python" -m jrt_eval.cli sweep "$@" ;;
  esac
done
extra=()
if [[ -z "$models" ]]; then models="paper-table1"; extra+=(--models "$models"); fi
if [[ -z "$out" ]]; then
  out="results/$(printf '%s' "$models" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-60)-$(date -u +%Y%m%d-%H%M%S)"
  extra+=(--out "$out")
  echo "run_eval.sh: results in $out (pass --out $out to resume)" >&2
fi
exec "$python" -m jrt_eval.cli sweep "${extra[@]}" "$@"
