#!/usr/bin/env bash
# Adapters, LoRA and full fine-tuning side by side on the embedded story: the same base model
# (pretrained/base.pt), the same target-domain data, the same epoch budget and batch size.
#
# Usage: ./local/benchmarks/compare_tuners.sh [--epochs N] [--exp-root DIR] [--num-threads N] [--methods "a b ..."]
#   methods: adapter8 adapter16 lora4 lora8 lora16 full (default: all)
# Needs the data of ./prepare.sh (run ./run.sh --stop-stage 1 first). For each method: fine-tune
# (skipped when its last epoch-N.pt exists, so an interrupted comparison goes on where it stopped),
# decode both test sets with the tuner on and off (forgetting report), export int8 ONNX (LoRA merged)
# and decode the target test set with onnxruntime; then local/reports/summarize_tuners.py writes
# $exp_root/summary.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

epochs=6
exp_root=exp/tuners
num_threads=2
methods="adapter8 adapter16 lora4 lora8 lora16 full"
while (($#)); do
  case "$1" in
    --epochs) epochs="${2:?--epochs needs a value}"; shift 2 ;;
    --exp-root) exp_root="${2:?--exp-root needs a value}"; shift 2 ;;
    --num-threads) num_threads="${2:?--num-threads needs a value}"; shift 2 ;;
    --methods) methods="${2:?--methods needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare_tuners.sh: error: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
done
[[ -f data/fbank/target_cuts_train.jsonl.gz ]] || { echo "compare_tuners.sh: error: no data/fbank/target_cuts_train.jsonl.gz: run ./run.sh --stop-stage 1 first" >&2; exit 1; }
# shellcheck disable=SC1091
source .venv/bin/activate
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (compare_tuners.sh) $*"; }
mkdir -p "$exp_root"
commands="$exp_root/commands.sh"
run() { echo "$*" >> "$commands"; log "\$ $*"; "$@"; }

# run.sh's fine-tuning settings: 25-s batches, model averaging every 20 batches.
common=(--bpe-model data/lang_bpe_500/bpe.model --num-workers 0 --enable-musan 0 --max-duration 25
        --average-period 20 --log-interval 20 --num-threads "$num_threads" --tensorboard 0
        --train-cuts data/fbank/target_cuts_train.jsonl.gz --valid-cuts target=data/fbank/target_cuts_dev.jsonl.gz)
decode_common=(--bpe-model data/lang_bpe_500/bpe.model --num-workers 0 --max-duration 100 --num-threads "$num_threads"
               --epoch "$epochs" --avg 1 --use-averaged-model 0
               --test-cuts source=data/fbank/source_cuts_test.jsonl.gz,target=data/fbank/target_cuts_test.jsonl.gz)

log "base model: decode both test sets (before fine-tuning)"
mkdir -p "$exp_root/base"
ln -sfn "$PWD/pretrained/base.pt" "$exp_root/base/epoch-99.pt"
run ./zipformer/decode.py --exp-dir "$exp_root/base" "${decode_common[@]}" --epoch 99

for method in $methods; do
  dir="$exp_root/$method"
  case "$method" in
    adapter*) recipe=zipformer_adapter; flags=(--use-adapters 1 --adapter-dim "${method#adapter}" --base-lr 0.045) ;;
    lora*) recipe=zipformer_lora; flags=(--use-lora 1 --lora-r "${method#lora}" --base-lr 0.045) ;;
    full) recipe=zipformer; flags=(--base-lr 0.0045) ;;
    *) echo "compare_tuners.sh: error: unknown method '$method' (adapterN, loraN or full)" >&2; exit 1 ;;
  esac
  if [[ -f $dir/epoch-$epochs.pt ]]; then
    log "$method: $dir/epoch-$epochs.pt exists, not training again (remove $dir to retrain)"
  else
    log "$method: fine-tune $epochs epochs"
    run "./$recipe/train.py" --num-epochs "$epochs" --start-epoch 1 --finetune-ckpt pretrained/base.pt \
      --exp-dir "$dir" "${flags[@]}" "${common[@]}"
  fi
  if [[ $recipe == zipformer ]]; then
    run ./zipformer/decode.py --exp-dir "$dir" "${decode_common[@]}"
    export_flags=()
  else
    run "./$recipe/decode.py" --exp-dir "$dir" --forgetting-report 1 "${decode_common[@]}"
    export_flags=()
    [[ $recipe == zipformer_lora ]] && export_flags=(--merge-lora 1)
  fi
  run "./$recipe/export-onnx.py" --tokens data/lang_bpe_500/tokens.txt --use-averaged-model 0 \
    --epoch "$epochs" --avg 1 --exp-dir "$dir" "${export_flags[@]}"
  name=$(basename "$(ls "$dir"/encoder-epoch-"$epochs"-avg-1*.int8.onnx)" .int8.onnx)
  name=${name#encoder-}
  run ./zipformer/onnx_decode.py --encoder-model-filename "$dir/encoder-$name.int8.onnx" \
    --decoder-model-filename "$dir/decoder-$name.int8.onnx" --joiner-model-filename "$dir/joiner-$name.int8.onnx" \
    --tokens data/lang_bpe_500/tokens.txt --test-cuts target=data/fbank/target_cuts_test.jsonl.gz \
    --num-threads "$num_threads" --exp-dir "$dir/onnx"
done
run ./local/reports/summarize_tuners.py --exp-root "$exp_root" --epochs "$epochs" --plot "$exp_root/wer_vs_trainable_params.png"
