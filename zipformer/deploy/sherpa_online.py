"""sherpa-onnx's online (streaming) recognizer over this recipe's streaming export, fed as a
live application feeds it: audio in pieces, tail silence, then input_finished().

sherpa-onnx computes its own fbank (the training features), decodes a window of T frames
whenever more than T are ready, and never pads the end: the tail silence lets the last real
frames reach a full window.
"""
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, Path]
# Silence appended after each utterance (sherpa-onnx's own examples append 0.66 s).
TAIL_SECONDS = 0.66


def online_recognizer(encoder: PathLike, decoder: PathLike, joiner: PathLike, tokens: PathLike, num_threads: int = 1):
    """A greedy-search sherpa_onnx.OnlineRecognizer over the three files (model type zipformer2)."""
    import sherpa_onnx

    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(tokens),
        encoder=str(encoder),
        decoder=str(decoder),
        joiner=str(joiner),
        num_threads=num_threads,
        decoding_method="greedy_search",
        model_type="zipformer2",
    )


def decode_online(
    recognizer, waves: Sequence[Tuple[int, np.ndarray]], piece_seconds: Optional[float] = None
) -> List[str]:
    """The text of each (sample rate, float samples in [-1, 1]) utterance, all streams decoded
    together. With piece_seconds, audio arrives in pieces of that length and every ready window
    is decoded between pieces (as live); otherwise all at once."""
    streams = [recognizer.create_stream() for _ in waves]
    pieces = [_pieces(samples, sample_rate, piece_seconds) for sample_rate, samples in waves]
    for step in range(max((len(p) for p in pieces), default=0)):
        for stream, (sample_rate, _), stream_pieces in zip(streams, waves, pieces):
            if step < len(stream_pieces):
                stream.accept_waveform(sample_rate, stream_pieces[step])
        _decode_ready(recognizer, streams)
    for stream, (sample_rate, _) in zip(streams, waves):
        stream.accept_waveform(sample_rate, np.zeros(int(TAIL_SECONDS * sample_rate), dtype=np.float32))
        stream.input_finished()
    _decode_ready(recognizer, streams)
    return [recognizer.get_result(stream) for stream in streams]


def stream_on_sherpa_frames(model, samples: np.ndarray, sample_rate: int = 16000) -> List[int]:
    """Token ids of onnxruntime's streaming greedy search over the frames sherpa-onnx decodes for
    one utterance fed by decode_online: the fbank of the samples and TAIL_SECONDS of silence,
    window k = frames [k·decode_chunk_len, k·decode_chunk_len + T) while that window ends before the
    last frame. `model` is a zipformer.deploy.streaming_inference.OnnxStreamingTransducer. Equal transcripts
    mean the export and sherpa-onnx's runtime agree; what is left between sherpa-onnx and
    streaming_decode.py is then the features (lhotse's stored ones there) and the tail."""
    from zipformer.deploy.inference import compute_fbank

    silence = np.zeros(int(TAIL_SECONDS * sample_rate), dtype=np.float32)
    features = compute_fbank(np.concatenate((np.asarray(samples, dtype=np.float32), silence)), sample_rate)
    count = len(range(0, features.shape[0] - model.window, model.decode_chunk_len))
    return model.decode_windows([(features, count)])[0]


def _pieces(samples: np.ndarray, sample_rate: int, piece_seconds: Optional[float]) -> List[np.ndarray]:
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if piece_seconds is None:
        return [samples]
    size = max(int(piece_seconds * sample_rate), 1)
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def _decode_ready(recognizer, streams) -> None:
    while True:
        ready = [s for s in streams if recognizer.is_ready(s)]
        if not ready:
            return
        recognizer.decode_streams(ready)
