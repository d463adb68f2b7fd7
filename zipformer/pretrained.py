#!/usr/bin/env python3
"""Transcribe a few audio files with a checkpoint, using the same 80-dim Fbank as training.

Usage:
  ./zipformer/pretrained.py --checkpoint exp/base/pretrained.pt --bpe-model data/lang_bpe_500/bpe.model \\
      foo.wav bar.flac
  # --method modified_beam_search --beam-size 4, or beam_search
  # an adapter checkpoint: ./zipformer_adapter/pretrained.py ... (--use-adapters 0: the base model)

The checkpoint is any file holding {"model": state_dict} (pretrained.pt, epoch-N.pt). This
project's files carry their configuration; icefall's pretrained.pt needs the model-shape flags it
was trained with (the defaults are icefall's). Audio that is not 16 kHz is resampled (lhotse's
PyTorch resampler); multi-channel audio is averaged to mono.
"""
from zipformer.checkpoints.loader import DecodingRecipe
from zipformer.decoding.transcribe import get_parser, main  # noqa: F401  (icefall's pretrained.get_parser)

if __name__ == "__main__":
    main(DecodingRecipe())
