#!/usr/bin/env python3
"""Transcribe audio files with a causal (streaming) checkpoint chunk by chunk, printing each
file's partial result whenever it grows.

Usage:
  ./zipformer/streaming_pretrained.py --checkpoint exp-causal/pretrained.pt \\
      --bpe-model data/lang_bpe_500/bpe.model --causal 1 --chunk-size 16 --left-context-frames 128 \\
      [model-shape flags as in training] foo.wav bar.flac
  # --method modified_beam_search --beam-size 4

All files are streamed together, one chunk of each per step (2·chunk-size feature frames, i.e.
320 ms at --chunk-size 16). A partial line is `name [seconds]: text`; the final results follow,
as ./zipformer/pretrained.py prints them.
"""
import argparse
import logging
from typing import Dict

from zipformer.checkpoints.loader import DecodingRecipe
from zipformer.core.errors import exit_on_user_error
from zipformer.core.params import AttributeDict
from zipformer.decoding import transcribe as pretrained
from zipformer.decoding.streaming_session import StreamingDecoder, check_streaming_flags
from zipformer.model.frontend import FRAME_SHIFT


def stream_files(params: AttributeDict, recipe: DecodingRecipe, given: frozenset = frozenset()) -> Dict[str, str]:
    """{file name: final text}, printing partial results chunk by chunk.

    `given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given).
    """
    params.decoding_method = params.method
    params.num_decode_streams = len(params.sound_files)
    model, sp = pretrained.load_checkpoint_model(params, recipe, given, streaming=True)
    chunk_size, _ = check_streaming_flags(params)
    decoder = StreamingDecoder(model, params, chunk_size)
    features = pretrained.read_features(params.sound_files)
    active = [decoder.new_stream(name, [], f) for name, f in zip(params.sound_files, features)]
    num_frames = {name: f.shape[0] for name, f in zip(params.sound_files, features)}
    shown = {name: "" for name in params.sound_files}
    while active:
        decoder.step(active)
        for stream in active:
            text = " ".join(sp.decode(decoder.tokens(stream)).split())
            if text != shown[stream.cut_id]:
                heard = min(stream.done_chunks * 2 * chunk_size, num_frames[stream.cut_id])
                seconds = heard * FRAME_SHIFT
                print(f"{stream.cut_id} [{seconds:.2f} s]: {text}", flush=True)
                shown[stream.cut_id] = text
        active = [s for s in active if not s.finished]
    logging.info(decoder.stats.summary(chunk_size))
    return shown


def get_parser() -> argparse.ArgumentParser:
    return pretrained.get_parser(DecodingRecipe())


def main(recipe: DecodingRecipe) -> None:
    params, given = pretrained.pretrained_params(recipe)
    with exit_on_user_error():
        texts: Dict[str, str] = stream_files(params, recipe, given)
    print()
    for name in params.sound_files:
        print(f"{name}:\n{texts[name]}\n")


if __name__ == "__main__":
    main(DecodingRecipe())
