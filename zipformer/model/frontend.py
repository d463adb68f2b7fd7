"""The acoustic front end every model of this recipe takes, defined once.

16 kHz mono audio -> 80-dim log-mel fbank (lhotse's Fbank, kaldi-native-fbank in the ONNX runtimes),
one frame every 10 ms (100 frames per second). The encoder embed (Conv2dSubsampling) turns T frames
into (T - 7) // 2 at 50 Hz, the encoder's stacks work at 50 Hz and below, and its output is at
25 Hz: SUBSAMPLING_FACTOR = 4. Frames past an utterance's end are padded with log(1e-10), as lhotse
pads batches and sherpa-onnx pads streams.

No PyTorch import: the onnxruntime-only scripts and data preparation use it too.
"""
import math

SAMPLE_RATE = 16000
FEATURE_DIM = 80
FRAME_SHIFT = 0.01  # seconds per fbank frame
SUBSAMPLING_FACTOR = 4
LOG_EPS = math.log(1e-10)


def frontend_params() -> dict:
    """The front end's entries of icefall's `params` (feature_dim, subsampling_factor)."""
    return {"feature_dim": FEATURE_DIM, "subsampling_factor": SUBSAMPLING_FACTOR}
