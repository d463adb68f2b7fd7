#!/usr/bin/env bash
# Data preparation, icefall style: numbered stages, each skipped when its outputs exist.
#
# Usage: ./prepare.sh [--dataset synth|librispeech|gigaspeech] [--stage N] [--stop-stage M] [options]
#
# --dataset synth (default): the embedded offline corpus, synthesized on this machine
#   (espeak-ng, flite, sox; text from Debian's fortunes). Knobs: local/synth/corpus_config.py.
#   Three domains: source (clean), target (telephone line), target_b (a far-field room).
#   stage 0  text partitions per domain/split          -> data/local/text/{source,target,target_b}_{train,dev,test}.tsv
#   stage 1  synthesize audio + lhotse manifests        -> data/audio/, data/manifests/{source,target,target_b}_*
#   stage 2  validate manifests, 80-dim Fbank (lilcom)  -> data/fbank/{source,target,target_b}_cuts_{train,dev,test}.jsonl.gz
#   stage 3  BPE (unigram 500) on the source train text -> data/lang_bpe_500/{bpe.model,tokens.txt}
#   options: --quick (tiny sizes for smoke tests), --seed S, --corpus-config FILE.json,
#            --source-train N --source-dev N --source-test N --target-train N --target-dev N --target-test N
#            --target-b-train N --target-b-dev N --target-b-test N
#            (utterances; 0 skips a split, e.g. --source-train 0 when the pretrained base model is shipped)
#   --german: a fourth domain, in German (Debian's fortunes-de read by German espeak-ng voices, clean
#     16 kHz), prepared only when asked for: stages 0-2 also write its german_* files, and
#   stage 4  BPE (unigram 250) on the german train text -> data/lang_bpe_250_de/{bpe.model,tokens.txt}
#     sizes: --german-train N --german-dev N --german-test N (with --german)
#
# --dataset librispeech: lhotse's LibriSpeech recipe (needs internet for stage 0)
#   stage 0  download to --dl-dir (default download/)   -> download/LibriSpeech
#   stage 1  manifests                                  -> data/manifests/librispeech_*
#   stage 2  Fbank, x0.9/x1.1 speed perturbation of the train parts, shuffled train set
#                                                       -> data/fbank/librispeech_cuts_{<part>,train-all-shuf}.jsonl.gz
#   stage 3  BPE (unigram 500) on the train transcripts -> data/lang_bpe_500/{bpe.model,tokens.txt}
#   options: --librispeech-parts "librispeech"|"mini_librispeech"|"dev-clean test-clean ..." (download),
#            --corpus-dir DIR (an already downloaded LibriSpeech/)
#
# --dataset gigaspeech: lhotse's GigaSpeech recipe (needs `pip install speechcolab` and a password)
#   stage 0  download S, DEV, TEST (--gigaspeech-password or $GIGASPEECH_PASSWORD)
#   stage 1  manifests                                  -> data/manifests/gigaspeech_*
#   stage 2  drop <SIL>/<MUSIC>/<NOISE>/<OTHER> segments, strip punctuation tags
#   stage 3  Fbank                                      -> data/fbank/cuts_{S,DEV,TEST}.jsonl.gz
#   (no BPE stage: fine-tuning keeps the source model's data/lang_bpe_500/bpe.model)
#
# Common options: --num-jobs N (default 2), --dl-dir DIR. Your own data: ./local/import_own_data.py --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

dataset=synth
stage=0
stop_stage=100
num_jobs=2
seed=42
quick=false
german=false
corpus_config=""
dl_dir=download
corpus_dir=""
librispeech_parts="librispeech"
gigaspeech_password="${GIGASPEECH_PASSWORD:-}"
size_args=()
german_size_args=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "prepare.sh: error: $*" >&2; exit 1; }
# The value of option $1 (an option with no value is an error, not bash's "unbound variable").
value() { (($# >= 2)) && [[ $2 != --* ]] || die "$1 needs a value (see ./prepare.sh --help)"; echo "$2"; }

while (($#)); do
  case "$1" in
    --dataset) dataset=$(value "$@"); shift 2 ;;
    --stage) stage=$(value "$@"); shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$(value "$@"); shift 2 ;;
    --num-jobs) num_jobs=$(value "$@"); shift 2 ;;
    --seed) seed=$(value "$@"); shift 2 ;;
    --quick) quick=true; shift ;;
    --german) german=true; shift ;;
    --corpus-config) corpus_config=$(value "$@"); shift 2 ;;
    --dl-dir) dl_dir=$(value "$@"); shift 2 ;;
    --corpus-dir) corpus_dir=$(value "$@"); shift 2 ;;
    --librispeech-parts) librispeech_parts=$(value "$@"); shift 2 ;;
    --gigaspeech-password) gigaspeech_password=$(value "$@"); shift 2 ;;
    --source-train|--source-dev|--source-test|--target-train|--target-dev|--target-test|--target-b-train|--target-b-dev|--target-b-test)
      size_args+=("$1" "$(value "$@")"); shift 2 ;;
    --german-train|--german-dev|--german-test) german_size_args+=("$1" "$(value "$@")"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see ./prepare.sh --help)" ;;
  esac
done
case "$dataset" in synth|librispeech|gigaspeech) ;; *) die "--dataset must be synth, librispeech or gigaspeech, got '$dataset'" ;; esac
[[ "$stage" =~ ^-?[0-9]+$ && "$stop_stage" =~ ^-?[0-9]+$ ]] || die "--stage and --stop-stage take integers"
((${#german_size_args[@]} == 0)) || $german || die "${german_size_args[0]} needs --german (the german domain is prepared only when asked for)"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (prepare.sh:${dataset}) $*"; }
run_stage() { ((stage <= $1 && $1 <= stop_stage)); }

./local/setup.sh
python=.venv/bin/python
start_time=$SECONDS
lang_dir=data/lang_bpe_500

if [[ $dataset == synth ]]; then
  corpus_args=(--seed "$seed")
  $quick && corpus_args+=(--quick)
  [[ -n $corpus_config ]] && corpus_args+=(--corpus-config "$corpus_config")
  corpus_args+=("${size_args[@]}")
  read -ra domains <<< "$($python -c 'import local.synth.corpus_config as c; print(*c.DOMAINS)')"
  if $german; then
    corpus_args+=(--german "${german_size_args[@]}")
    domains+=(german)
  fi

  if run_stage 0; then
    log "stage 0: text partitions from Debian's fortunes"
    $python local/synth/synthesize_corpus.py text --text-dir data/local/text "${corpus_args[@]}"
  fi
  if run_stage 1; then
    log "stage 1: synthesize the domains: ${domains[*]}"
    $python local/synth/synthesize_corpus.py audio --text-dir data/local/text --audio-dir data/audio \
      --manifest-dir data/manifests --num-jobs "$num_jobs" "${corpus_args[@]}"
  fi
  if run_stage 2; then
    log "stage 2: validate manifests and compute 80-dim Fbank"
    compgen -G "data/manifests/.synth_*" > /dev/null || die "no synthesized manifests in data/manifests: run stage 1 first"
    # --skip-missing: a split synthesized with size 0 has no manifests.
    $python local/compute_fbank.py --dataset "${domains[@]}" --parts train dev test --skip-missing \
      --manifest-dir data/manifests --fbank-dir data/fbank --num-jobs "$num_jobs"
  fi
  if run_stage 3; then
    log "stage 3: BPE model (unigram, 500) on the source train text"
    $python local/prepare_lang.py --lang-dir $lang_dir --vocab-size 500 --text data/local/text/source_train.tsv
  fi
  if $german && run_stage 4; then
    log "stage 4: BPE model (unigram, 250) on the german train text"
    $python local/prepare_lang.py --lang-dir data/lang_bpe_250_de --vocab-size 250 --text data/local/text/german_train.tsv
  fi
  summary_files=()
  for domain in "${domains[@]}"; do summary_files+=(data/fbank/"${domain}"_cuts_{train,dev,test}.jsonl.gz); done

elif [[ $dataset == librispeech ]]; then
  ls_corpus_dir="${corpus_dir:-$dl_dir/LibriSpeech}"
  if run_stage 0; then
    log "stage 0: download LibriSpeech ($librispeech_parts) to $dl_dir"
    # shellcheck disable=SC2086  # the parts are a word list
    $python local/prepare_librispeech.py download --dl-dir "$dl_dir" --parts $librispeech_parts
  fi
  if run_stage 1; then
    log "stage 1: LibriSpeech manifests (lhotse.recipes.prepare_librispeech)"
    $python local/prepare_librispeech.py manifests --corpus-dir "$ls_corpus_dir" --manifest-dir data/manifests --num-jobs "$num_jobs"
  fi
  ls_parts() {
    local f
    for f in data/manifests/librispeech_recordings_*.jsonl.gz; do
      [[ -e $f ]] || die "no LibriSpeech manifests in data/manifests: run stage 1 first"
      f=${f#data/manifests/librispeech_recordings_}; echo "${f%.jsonl.gz}"
    done
  }
  if run_stage 2; then
    log "stage 2: Fbank (speed perturbation on the train parts) and the shuffled train set"
    mapfile -t parts < <(ls_parts)
    train_parts=()
    for p in "${parts[@]}"; do [[ $p == train-* ]] && train_parts+=("$p"); done
    $python local/compute_fbank.py --dataset librispeech --parts "${parts[@]}" \
      --speed-perturb-parts "${train_parts[@]}" --manifest-dir data/manifests --fbank-dir data/fbank --num-jobs "$num_jobs"
    if ((${#train_parts[@]})); then
      $python local/prepare_librispeech.py shuffle --fbank-dir data/fbank --seed "$seed"
    fi
  fi
  if run_stage 3; then
    log "stage 3: BPE model (unigram, 500) on the LibriSpeech train transcripts"
    train_sups=(data/manifests/librispeech_supervisions_train-*.jsonl.gz)
    [[ -e ${train_sups[0]} ]] || die "no LibriSpeech train manifests in data/manifests: prepare a train part first"
    $python local/prepare_lang.py --lang-dir $lang_dir --vocab-size 500 --cuts "${train_sups[@]}"
  fi
  summary_files=(data/fbank/librispeech_cuts_*.jsonl.gz)

else
  gs_corpus_dir="${corpus_dir:-$dl_dir/GigaSpeech}"
  if run_stage 0; then
    log "stage 0: download GigaSpeech S, DEV, TEST to $dl_dir"
    $python local/prepare_gigaspeech.py download --dl-dir "$dl_dir" --password "$gigaspeech_password"
  fi
  if run_stage 1; then
    log "stage 1: GigaSpeech manifests (lhotse.recipes.prepare_gigaspeech)"
    $python local/prepare_gigaspeech.py manifests --corpus-dir "$gs_corpus_dir" --manifest-dir data/manifests --num-jobs "$num_jobs"
  fi
  if run_stage 2; then
    log "stage 2: clean GigaSpeech texts"
    $python local/prepare_gigaspeech.py preprocess --manifest-dir data/manifests
  fi
  if run_stage 3; then
    log "stage 3: Fbank -> data/fbank/cuts_{S,DEV,TEST}.jsonl.gz"
    $python local/prepare_gigaspeech.py fbank --manifest-dir data/manifests --fbank-dir data/fbank --num-jobs "$num_jobs"
  fi
  summary_files=(data/fbank/cuts_{S,DEV,TEST}.jsonl.gz)
fi

existing=()
for f in "${summary_files[@]}"; do [[ -e $f ]] && existing+=("$f"); done
if ((${#existing[@]})); then
  $python local/summarize_cuts.py "${existing[@]}"
fi
log "done in $((SECONDS - start_time)) s"
