#!/usr/bin/env python3
"""Transcribe sound files with a streaming ONNX export and onnxruntime, chunk by chunk (no PyTorch).

Usage:
  ./zipformer/onnx_pretrained-streaming.py \\
      --encoder-model-filename zipformer/exp-causal/encoder-epoch-30-avg-9-chunk-16-left-128.onnx \\
      --decoder-model-filename zipformer/exp-causal/decoder-epoch-30-avg-9-chunk-16-left-128.onnx \\
      --joiner-model-filename zipformer/exp-causal/joiner-epoch-30-avg-9-chunk-16-left-128.onnx \\
      --tokens data/lang_bpe_500/tokens.txt \\
      foo.wav bar.wav

Sound files: 16 kHz (the first channel is used). Features: 80-bin fbank (kaldi-native-fbank, as
for training), followed by tail padding; the encoder runs one window of T frames (its metadata)
every decode_chunk_len frames, with its cached states, as sherpa-onnx's online recognizer does.
Search: greedy, one symbol per frame. Prints one `{file}: {text}` line per file.
"""
import argparse
from typing import Dict, List, Sequence

from zipformer.core.errors import exit_on_user_error
from zipformer.core.flag_types import int_at_least
from zipformer.deploy.inference import add_file_arguments, compute_fbank, read_tokens, read_wave, tokens_to_text
from zipformer.deploy.streaming_inference import OnnxStreamingTransducer


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_file_arguments(parser, "*-chunk-*")
    parser.add_argument("--num-threads", type=int_at_least(1), default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--batch-size", type=int_at_least(1), default=16, help="files streamed together, one batch per chunk")
    parser.add_argument("sound_files", type=str, nargs="+", help="16 kHz sound files (wav, flac, ...)")
    return parser


def transcribe(
    model: OnnxStreamingTransducer, tokens: Dict[int, str], sound_files: Sequence[str], batch_size: int
) -> List[str]:
    """The text of each sound file, in order."""
    texts: List[str] = []
    for start in range(0, len(sound_files), batch_size):
        features = [compute_fbank(read_wave(f)) for f in sound_files[start : start + batch_size]]
        texts.extend(tokens_to_text(ids, tokens) for ids in model.decode_utterances(features))
    return texts


def main() -> None:
    args = get_parser().parse_args()
    with exit_on_user_error():
        tokens = read_tokens(args.tokens)
        model = OnnxStreamingTransducer.from_files(
            args.encoder_model_filename, args.decoder_model_filename, args.joiner_model_filename, args.num_threads
        )
        model.model.check_tokens(tokens, args.tokens)
        texts = transcribe(model, tokens, args.sound_files, args.batch_size)
    for filename, text in zip(args.sound_files, texts):
        print(f"{filename}: {text}")


if __name__ == "__main__":
    main()
