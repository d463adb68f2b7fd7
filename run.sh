#!/usr/bin/env bash
# The main job: replay the adapter domain-adaptation story on the embedded offline corpus.
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--quick] [--pretrain] [--adapter-dim B]
#                 [--full-finetune] [--streaming] [--chunk-size C] [--left-context-frames L] [--domains]
#                 [--exp-root DIR] [--num-threads N]
#
#   stage 0  set up: Debian packages and .venv (local/setup.sh)
#   stage 1  data: the synthesized source and target domains (./prepare.sh; target_b too with --domains);
#            the source train split only with --pretrain
#   stage 2  the source-domain base model: the one shipped in pretrained/ (default), or, with
#            --pretrain, trained from scratch by zipformer/train.py (hours on 2 CPU cores). It is
#            causal: the one file decodes in full context and, with --streaming, chunk by chunk
#   stage 3  decode the source and target test sets with the base model        ("before")
#   stage 4  fine-tune adapters on the target domain (zipformer_adapter/train.py, the seed's flags)
#   stage 5  decode both test sets with the averaged adapters on and off: the forgetting report ("after")
#   stage 6  with --full-finetune: fine-tune all weights on the same data, for comparison
#   stage 7  export to ONNX (fp32 + int8) and decode the target test set with sherpa-onnx
#   stage 8  summary table -> $exp_root/summary.md (with the commands that produced it)
#
# --streaming: the streaming story, into exp-streaming/ unless --exp-root says otherwise: stages 3
#   and 5 also decode chunk by chunk (streaming_decode.py) with --chunk-size C (default 16 frames of
#   50 Hz: 320 ms) and --left-context-frames L (default 128), and stage 7 exports the streaming ONNX
#   files and decodes with sherpa-onnx's online recognizer.
# --domains: several domains on one base. Stage 1 also synthesizes target_b (a far-field room),
#   stage 4 also fine-tunes adapters on it, stage 5 decodes the three test sets in ONE mixed-domain
#   pass (each utterance with its own domain's adapters, source with none), stage 7 exports one ONNX
#   encoder for every domain and decodes the three test sets with it, and stage 8 writes the
#   three-domain table ($exp_root/domains/summary.md).
# --quick: tiny corpus and a short fine-tune (a smoke test of every stage; CI runs it).
# Real corpora on GPUs (see README.md):
#   ./prepare.sh --dataset gigaspeech ...; then stages 4-7 with --dataset gigaspeech
#   --finetune-ckpt icefall-asr-librispeech-zipformer-2023-05-15/exp/pretrained.pt
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
quick=false
pretrain=false
full_finetune=false
streaming=false
domains=false
chunk_size=16
left_context_frames=128
adapter_dim=8  # 1.48% of the small base model, like dim 16 (1.15%) on the normal one
exp_root=""
num_threads=2
dataset=synth
finetune_ckpt=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "run.sh: error: $*" >&2; exit 1; }
# The value of option $1 (an option with no value is an error, not bash's "unbound variable").
value() { (($# >= 2)) && [[ $2 != --* ]] || die "$1 needs a value (see ./run.sh --help)"; echo "$2"; }

while (($#)); do
  case "$1" in
    --stage) stage=$(value "$@"); shift 2 ;;
    --stop-stage) stop_stage=$(value "$@"); shift 2 ;;
    --quick) quick=true; shift ;;
    --pretrain) pretrain=true; shift ;;
    --full-finetune) full_finetune=true; shift ;;
    --streaming) streaming=true; shift ;;
    --domains) domains=true; shift ;;
    --chunk-size) chunk_size=$(value "$@"); shift 2 ;;
    --left-context-frames) left_context_frames=$(value "$@"); shift 2 ;;
    --adapter-dim) adapter_dim=$(value "$@"); shift 2 ;;
    --exp-root) exp_root=$(value "$@"); shift 2 ;;
    --num-threads) num_threads=$(value "$@"); shift 2 ;;
    --dataset) dataset=$(value "$@"); shift 2 ;;
    --finetune-ckpt) finetune_ckpt=$(value "$@"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see ./run.sh --help)" ;;
  esac
done
[[ $stage =~ ^[0-9]+$ && $stop_stage =~ ^[0-9]+$ ]] || die "--stage and --stop-stage take integers (see ./run.sh --help)"
[[ $adapter_dim =~ ^[1-9][0-9]*$ && $num_threads =~ ^[1-9][0-9]*$ ]] || die "--adapter-dim and --num-threads take positive integers"
[[ $chunk_size =~ ^[1-9][0-9]*$ && $left_context_frames =~ ^[1-9][0-9]*$ ]] \
  || die "--chunk-size and --left-context-frames take positive integers (frames of 50 Hz, e.g. 16 and 128)"
if [[ -z $exp_root ]]; then $streaming && exp_root=exp-streaming || exp_root=exp; fi
[[ $dataset == synth ]] || die "--dataset $dataset: the real-corpus runs need GPUs and downloads; follow README.md section 'The real experiment'"
[[ -z $finetune_ckpt ]] || die "--finetune-ckpt is for the real experiment (README.md); the embedded run uses pretrained/base.pt"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (run.sh) $*"; }
stage_on() { ((stage <= $1 && $1 <= stop_stage)); }

mkdir -p "$exp_root"
commands="$exp_root/commands.sh"
# Run a command, show it, and record it for the summary.
run() {
  echo "$*" >> "$commands"
  log "\$ $*"
  "$@"
}

# The base model's shape, for --pretrain (pretrained/README.md): causal, trained with chunk sizes
# that include -1 (full context). Every later stage reads it from the checkpoints, which carry their
# configuration.
base_model_flags=(
  --num-encoder-layers 1,1,1,1,1,1 --feedforward-dim 256,256,256,256,256,256
  --encoder-dim 128,128,128,128,128,128 --encoder-unmasked-dim 128,128,128,128,128,128
  --num-heads 4,4,4,4,4,4 --decoder-dim 256 --joiner-dim 256
  --causal 1 --chunk-size 16,32,64,-1 --left-context-frames 64,128,256,-1
)
shipped_base=pretrained/base.pt
base_dir=$exp_root/base
adapter_dir=$exp_root/adapter_dim$adapter_dim
full_dir=$exp_root/full_finetune
source_test=data/fbank/source_cuts_test.jsonl.gz
target_test=data/fbank/target_cuts_test.jsonl.gz
test_cuts="source=$source_test,target=$target_test"
target_b_test=data/fbank/target_b_cuts_test.jsonl.gz
adapter_b_dir=$exp_root/adapter_dim${adapter_dim}_target_b
domains_dir=$exp_root/domains
$domains && test_cuts+=",target_b=$target_b_test"
valid_cuts="source=data/fbank/source_cuts_dev.jsonl.gz,target=data/fbank/target_cuts_dev.jsonl.gz"

if $quick; then
  prepare_args=(--quick)
  adapter_epochs=1
  full_epochs=1
else
  prepare_args=()
  adapter_epochs=6
  full_epochs=2
fi
# Stages 5 and 7 decode and export the averaged adapters (icefall's model averaging over the last 2
# epochs): 1.5 points better on the target dev set than the last epoch alone (RESULTS.md). A 1-epoch
# --quick run has nothing to average.
if $quick; then adapter_avg=1; adapter_averaged=0; else adapter_avg=2; adapter_averaged=1; fi
# The registry of --domains: each target domain's adapter-only file of the last epoch, on one base.
tuners="target=$adapter_dir/adapter-epoch-$adapter_epochs.pt,target_b=$adapter_b_dir/adapter-epoch-$adapter_epochs.pt"
# The base model is shipped: only pretraining needs the source train split (7000 utterances, 6.9 h).
if $pretrain; then prepare_args+=(--source-train 7000); else prepare_args+=(--source-train 0); fi
# The second target domain only for --domains (the default run stays as fast as it was).
$domains || prepare_args+=(--target-b-train 0 --target-b-dev 0 --target-b-test 0)
model_flags=(--bpe-model data/lang_bpe_500/bpe.model --num-workers 0)
# A causal base decodes in full context when asked to (a non-causal one always does), or at one latency.
full_context=(--chunk-size -1 --left-context-frames -1)
latency=(--chunk-size "$chunk_size" --left-context-frames "$left_context_frames")
decode_flags=("${model_flags[@]}" --max-duration 100 "${full_context[@]}")
stream_flags=("${model_flags[@]}" --max-duration 100 "${latency[@]}" --num-decode-streams 500)
# 25-s batches: 0.9 h of target audio is then about 130 updates per epoch. An epoch takes about
# the same time (70 s on 2 cores) whatever the batch size, and the adapters' target-dev loss fell
# about twice as far per epoch with 50-s as with 100-s batches, and further with 25-s ones (RESULTS.md).
finetune_flags=("${model_flags[@]}" --max-duration 25)

if stage_on 0; then
  log "stage 0: set up the environment"
  ./local/setup.sh
fi
# shellcheck disable=SC1091
source .venv/bin/activate

if stage_on 1; then
  log "stage 1: prepare the synthesized domains"
  run ./prepare.sh "${prepare_args[@]}"
fi

if stage_on 2; then
  mkdir -p "$base_dir"
  if $pretrain; then
    log "stage 2: pretrain the base model on the source domain (hours on 2 CPU cores; progress in $base_dir/log)"
    run ./zipformer/train.py --world-size 1 --num-epochs 40 --start-epoch 1 --exp-dir "$base_dir/train" \
      "${base_model_flags[@]}" --max-duration 100 --base-lr 0.045 --ref-duration 10 --warm-step 500 \
      --train-cuts data/fbank/source_cuts_train.jsonl.gz --valid-cuts "$valid_cuts" \
      --enable-musan 0 --save-every-n 200 --keep-last-k 4 --average-period 20 \
      --log-interval 20 --valid-interval 400 --num-workers 1 --num-threads "$num_threads"
    run ./local/model_tools/export_base_model.py --exp-dir "$base_dir/train" --epoch 40 --avg 10 --out "$base_dir/pretrained.pt"
  else
    log "stage 2: use the shipped base model $shipped_base"
    cp "$shipped_base" "$base_dir/pretrained.pt"
  fi
  ./local/check_lang.py --bpe-model data/lang_bpe_500/bpe.model --expected pretrained/bpe.model
  # icefall's convention for decoding a single pretrained file: call it an epoch checkpoint.
  ln -sfn pretrained.pt "$base_dir/epoch-99.pt"
fi

if stage_on 3; then
  log "stage 3: decode both test sets with the base model (before adaptation)"
  run ./zipformer/decode.py --epoch 99 --avg 1 --use-averaged-model 0 --exp-dir "$base_dir" \
    --test-cuts "$test_cuts" --num-threads "$num_threads" "${decode_flags[@]}"
  if $streaming; then
    run ./zipformer/streaming_decode.py --epoch 99 --avg 1 --use-averaged-model 0 --exp-dir "$base_dir" \
      --test-cuts "$test_cuts" --num-threads "$num_threads" "${stream_flags[@]}"
  fi
fi

# Fine-tune adapters on domain $1 into $2. Validation on that domain only: the source domain is
# checked in stage 5, with the adapters off.
finetune_adapters() {
  run ./zipformer_adapter/train.py --world-size 1 --num-epochs "$adapter_epochs" --start-epoch 1 --use-fp16 1 \
    --base-lr 0.045 --use-adapters 1 --adapter-dim "$adapter_dim" --do-finetune 1 --master-port 13022 \
    --finetune-ckpt "$base_dir/pretrained.pt" --exp-dir "$2" \
    --train-cuts "data/fbank/$1_cuts_train.jsonl.gz" --valid-cuts "$1=data/fbank/$1_cuts_dev.jsonl.gz" \
    --enable-musan 0 --average-period 20 --log-interval 20 --num-threads "$num_threads" "${finetune_flags[@]}"
}

if stage_on 4; then
  log "stage 4: fine-tune adapters (dim $adapter_dim) on the target domain"
  finetune_adapters target "$adapter_dir"
  if $domains; then
    log "stage 4: fine-tune adapters (dim $adapter_dim) on the second target domain, target_b"
    finetune_adapters target_b "$adapter_b_dir"
  fi
fi

if stage_on 5; then
  log "stage 5: decode both test sets with the adapters on and off (forgetting report)"
  run ./zipformer_adapter/decode.py --epoch "$adapter_epochs" --avg "$adapter_avg" --use-averaged-model "$adapter_averaged" \
    --use-adapters 1 --forgetting-report 1 --exp-dir "$adapter_dir" \
    --test-cuts "$test_cuts" --num-threads "$num_threads" "${decode_flags[@]}"
  if $streaming; then
    for on in 1 0; do
      run ./zipformer_adapter/streaming_decode.py --epoch "$adapter_epochs" --avg "$adapter_avg" \
        --use-averaged-model "$adapter_averaged" --use-adapters "$on" --exp-dir "$adapter_dir" \
        --test-cuts "$test_cuts" --num-threads "$num_threads" \
        "${stream_flags[@]}"
    done
  fi
  if $domains; then
    log "stage 5: each domain's adapters alone on the three test sets, then one mixed-domain decode"
    for dir in "$adapter_dir" "$adapter_b_dir"; do
      run ./zipformer_adapter/decode.py --epoch "$adapter_epochs" --avg 1 --use-averaged-model 0 --use-adapters 1 \
        --exp-dir "$dir" --test-cuts "$test_cuts" --num-threads "$num_threads" "${decode_flags[@]}"
    done
    # --epoch/--avg name the tuner files' epoch in the result files (the registry reads each file's weights).
    run ./zipformer_adapter/decode.py --exp-dir "$domains_dir" --base-ckpt "$base_dir/pretrained.pt" \
      --epoch "$adapter_epochs" --avg 1 --use-averaged-model 0 \
      --tuners "$tuners" --test-cuts "$test_cuts" --cut-domains source=base,target=target,target_b=target_b \
      --mixed-domains 1 --num-threads "$num_threads" "${decode_flags[@]}"
  fi
fi

if stage_on 6 && $full_finetune; then
  log "stage 6: full fine-tuning of the same base model on the same data (comparison)"
  run ./zipformer/train.py --world-size 1 --num-epochs "$full_epochs" --start-epoch 1 \
    --base-lr 0.0045 --finetune-ckpt "$base_dir/pretrained.pt" --exp-dir "$full_dir" \
    --train-cuts data/fbank/target_cuts_train.jsonl.gz --valid-cuts "$valid_cuts" \
    --enable-musan 0 --average-period 20 --log-interval 20 --num-threads "$num_threads" "${finetune_flags[@]}"
  run ./zipformer/decode.py --epoch "$full_epochs" --avg 1 --use-averaged-model 0 --exp-dir "$full_dir" \
    --test-cuts "$test_cuts" --num-threads "$num_threads" "${decode_flags[@]}"
fi

if stage_on 7; then
  if $streaming; then
    log "stage 7: export streaming ONNX (fp32 + int8) and decode the target test set with sherpa-onnx's online recognizer"
    export_script=./zipformer_adapter/export-onnx-streaming.py
    export_latency=("${latency[@]}")
    onnx_name="epoch-$adapter_epochs-avg-$adapter_avg-chunk-$chunk_size-left-$left_context_frames"
  else
    log "stage 7: export to ONNX (fp32 + int8) and decode the target test set with sherpa-onnx"
    export_script=./zipformer_adapter/export-onnx.py
    export_latency=()
    onnx_name="epoch-$adapter_epochs-avg-$adapter_avg"
  fi
  run "$export_script" --tokens data/lang_bpe_500/tokens.txt --use-averaged-model "$adapter_averaged" \
    --epoch "$adapter_epochs" --avg "$adapter_avg" --exp-dir "$adapter_dir" --use-adapters 1 "${export_latency[@]}"
  for kind in "" ".int8"; do
    run ./zipformer/onnx_decode.py --runtime sherpa-onnx \
      --encoder-model-filename "$adapter_dir/encoder-$onnx_name$kind.onnx" \
      --decoder-model-filename "$adapter_dir/decoder-$onnx_name$kind.onnx" \
      --joiner-model-filename "$adapter_dir/joiner-$onnx_name$kind.onnx" \
      --tokens data/lang_bpe_500/tokens.txt --test-cuts "target=$target_test" --num-threads "$num_threads"
  done
fi

if stage_on 7 && $domains; then
  log "stage 7: one ONNX encoder for every domain (a domain index per utterance), decoded with onnxruntime"
  run ./zipformer_adapter/export-onnx.py --tokens data/lang_bpe_500/tokens.txt --exp-dir "$domains_dir" \
    --base-ckpt "$base_dir/pretrained.pt" --tuners "$tuners"
  for kind in "" ".int8"; do
    name="domains-target-target_b$kind"
    run ./zipformer/onnx_decode.py --encoder-model-filename "$domains_dir/encoder-$name.onnx" \
      --decoder-model-filename "$domains_dir/decoder-$name.onnx" --joiner-model-filename "$domains_dir/joiner-$name.onnx" \
      --tokens data/lang_bpe_500/tokens.txt --test-cuts "$test_cuts" \
      --cut-domains source=base,target=target,target_b=target_b --num-threads "$num_threads"
  done
fi

if stage_on 8; then
  log "stage 8: summary"
  streaming_summary=()
  $streaming && streaming_summary=("${latency[@]}")
  run ./local/reports/summarize_run.py --exp-root "$exp_root" --adapter-dim "$adapter_dim" --adapter-epochs "$adapter_epochs" \
    --adapter-avg "$adapter_avg" --adapter-averaged "$adapter_averaged" --full-epochs "$full_epochs" \
    "${streaming_summary[@]}"
  if $domains; then
    run ./local/reports/summarize_domains.py --exp-root "$exp_root" --adapter-dim "$adapter_dim" --adapter-epochs "$adapter_epochs"
  fi
fi
