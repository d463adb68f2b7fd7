#!/usr/bin/env python3
"""Transcribe sound files with exported ONNX models and onnxruntime (no PyTorch model involved).

Usage:
  ./zipformer/onnx_pretrained.py \\
      --encoder-model-filename zipformer_adapter/exp/encoder-epoch-20-avg-1.onnx \\
      --decoder-model-filename zipformer_adapter/exp/decoder-epoch-20-avg-1.onnx \\
      --joiner-model-filename zipformer_adapter/exp/joiner-epoch-20-avg-1.onnx \\
      --tokens data/lang_bpe_500/tokens.txt \\
      foo.wav bar.wav
  # an encoder of several domains (export-onnx.py --tuners): each file's domain ('base' = no tuner)
  ./zipformer/onnx_pretrained.py ... --domains call,medical,base a.wav b.wav c.wav   # or --domain call

Sound files: 16 kHz (the first channel is used). Features: 80-bin fbank computed with
kaldi-native-fbank exactly as for training. Search: batched greedy search, one symbol per frame.
Prints one `{file}: {text}` line per file.
"""
import argparse
from typing import Dict, List, Optional, Sequence

from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import int_at_least
from zipformer.data.domain_names import add_file_domain_arguments, file_domains
from zipformer.deploy.inference import (
    OnnxTransducer,
    add_file_arguments,
    compute_fbank,
    pad_features,
    read_tokens,
    read_wave,
    tokens_to_text,
)
from zipformer.deploy.streaming_inference import is_streaming


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_file_arguments(parser)
    parser.add_argument("--num-threads", type=int_at_least(1), default=4, help="onnxruntime intra-op threads")
    parser.add_argument("--batch-size", type=int_at_least(1), default=16, help="files decoded together")
    add_file_domain_arguments(parser)
    parser.add_argument("sound_files", type=str, nargs="+", help="16 kHz sound files (wav, flac, ...)")
    return parser


def transcribe(
    model: OnnxTransducer,
    tokens: Dict[int, str],
    sound_files: Sequence[str],
    batch_size: int,
    domains: Optional[Sequence[str]] = None,
) -> List[str]:
    """The text of each sound file, in order; `domains`: each file's domain name (an encoder of
    several domains)."""
    indices = model.domain_indices(domains, "--domain/--domains") if domains is not None else None
    texts: List[str] = []
    for start in range(0, len(sound_files), batch_size):
        features = [compute_fbank(read_wave(f)) for f in sound_files[start : start + batch_size]]
        x, x_lens = pad_features(features)
        domain = indices[start : start + batch_size] if indices is not None else None
        texts.extend(tokens_to_text(ids, tokens) for ids in model.decode_features(x, x_lens, domain))
    return texts


def main() -> None:
    args = get_parser().parse_args()
    with exit_on_user_error():
        tokens = read_tokens(args.tokens)
        model = OnnxTransducer(
            args.encoder_model_filename, args.decoder_model_filename, args.joiner_model_filename, args.num_threads
        )
        model.check_tokens(tokens, args.tokens)
        if is_streaming(model):
            raise UserError(
                f"{args.encoder_model_filename} is a streaming encoder: transcribe with "
                "./zipformer/onnx_pretrained-streaming.py"
            )
        domains = file_domains(args, args.sound_files)
        texts = transcribe(model, tokens, args.sound_files, args.batch_size, domains)
    for filename, text in zip(args.sound_files, texts):
        print(f"{filename}: {text}")


if __name__ == "__main__":
    main()
