"""Chunk-by-chunk inference of a streaming ONNX export with onnxruntime, without PyTorch.

The files follow zipformer/deploy/export_streaming.py (sherpa-onnx's online Zipformer2 contract):
the encoder takes x (N, T, 80) and its cached states and returns encoder_out (N, decode_chunk_len / 4,
joiner_dim) and the new states, in input order. Everything this module needs comes from the
encoder's metadata (T, decode_chunk_len) and its input shapes (the batch axis of each state is
the one named N), as sherpa-onnx's runtime builds its states.

Utterances are fed as icefall's streaming_decode.py and this recipe's streaming_decode.py feed them:
the fbank is followed by TAIL_PAD_FRAMES frames of LOG_EPS, then padded with LOG_EPS to whole
windows; window k is frames [k·decode_chunk_len, k·decode_chunk_len + T).
"""
from typing import List, Sequence, Tuple

import numpy as np

from zipformer.core.errors import UserError
from zipformer.deploy.inference import OnnxTransducer, PathLike, _int_metadata
from zipformer.model.frontend import LOG_EPS

# Frames of LOG_EPS after every utterance (zipformer/model/streaming.py TAIL_PAD_FRAMES; repeated here
# so that this module needs no PyTorch import).
TAIL_PAD_FRAMES = 30
BATCH_AXIS_NAME = "N"

States = List[np.ndarray]


def num_windows(num_frames: int, decode_chunk_len: int, window: int) -> int:
    """Windows a stream of `num_frames` feature frames (tail padding included) takes: they start
    every decode_chunk_len frames until the input plus the last window's look-ahead is consumed."""
    look_ahead = window - decode_chunk_len
    return -(-(num_frames + look_ahead) // decode_chunk_len)


def padded_for_streaming(features: np.ndarray, decode_chunk_len: int, window: int) -> Tuple[np.ndarray, int]:
    """(T, F) fbank -> (n·decode_chunk_len + look-ahead, F) with the tail padding, and n windows."""
    with_tail = features.shape[0] + TAIL_PAD_FRAMES
    count = num_windows(with_tail, decode_chunk_len, window)
    length = (count - 1) * decode_chunk_len + window
    padded = np.full((length, features.shape[1]), LOG_EPS, dtype=np.float32)
    padded[: features.shape[0]] = features
    return padded, count


def is_streaming(model: OnnxTransducer) -> bool:
    """Whether the encoder of `model` is a streaming export (it has decode_chunk_len metadata)."""
    return "decode_chunk_len" in model.encoder.get_modelmeta().custom_metadata_map


class OnnxStreamingTransducer:
    """The sessions of a streaming export (an OnnxTransducer of its three files), run chunk by chunk."""

    def __init__(self, model: OnnxTransducer, encoder_filename: PathLike = "the encoder") -> None:
        if not is_streaming(model):
            raise UserError(
                f"{encoder_filename} is not a streaming encoder (no 'decode_chunk_len' metadata): export "
                "it with export-onnx-streaming.py, or decode it with onnx_decode.py/onnx_pretrained.py"
            )
        self.model = model
        session = model.encoder
        self.window = _int_metadata(session, "T", encoder_filename)
        self.decode_chunk_len = _int_metadata(session, "decode_chunk_len", encoder_filename)
        self.inputs = session.get_inputs()
        self.input_names = [i.name for i in self.inputs]
        self.batch_axes = [list(i.shape).index(BATCH_AXIS_NAME) for i in self.inputs[1:]]

    @classmethod
    def from_files(
        cls, encoder: PathLike, decoder: PathLike, joiner: PathLike, num_threads: int = 1
    ) -> "OnnxStreamingTransducer":
        return cls(OnnxTransducer(encoder, decoder, joiner, num_threads), encoder)

    @property
    def context_size(self) -> int:
        return self.model.context_size

    def init_states(self, batch_size: int) -> States:
        """Zero states of `batch_size` fresh streams, shaped and typed as the encoder's inputs."""
        states = []
        for spec in self.inputs[1:]:
            shape = [batch_size if d == BATCH_AXIS_NAME else d for d in spec.shape]
            dtype = np.int64 if spec.type == "tensor(int64)" else np.float32
            states.append(np.zeros(shape, dtype=dtype))
        return states

    def stack(self, streams: Sequence[States]) -> States:
        """Per-stream states -> the states of their concatenated batch."""
        return [np.concatenate(parts, axis=axis) for parts, axis in zip(zip(*streams), self.batch_axes)]

    def first(self, states: States, count: int) -> States:
        """The states of the first `count` streams of a batch."""
        return [state.take(np.arange(count), axis=axis) for state, axis in zip(states, self.batch_axes)]

    def run_chunk(self, x: np.ndarray, states: States) -> Tuple[np.ndarray, States]:
        """x (N, T, 80) float32 windows, stacked states -> encoder_out (N, T', joiner_dim), new states."""
        feeds = dict(zip(self.input_names, [x.astype(np.float32), *states]))
        encoder_out, *new_states = self.model.encoder.run(None, feeds)
        return encoder_out, new_states

    def decode_utterances(self, features: Sequence[np.ndarray]) -> List[List[int]]:
        """Stream each (T_i, 80) fbank chunk by chunk, with the tail padding, all streams as one
        batch, with greedy search; returns token ids per utterance, in order."""
        return self.decode_windows([padded_for_streaming(f, self.decode_chunk_len, self.window) for f in features])

    def decode_windows(self, windowed: Sequence[Tuple[np.ndarray, int]]) -> List[List[int]]:
        """(frames (T_i, 80), n_i) per utterance -> token ids per utterance, in order: window k of
        utterance i is frames [k·decode_chunk_len, k·decode_chunk_len + T) for k < n_i, decoded
        with greedy search, all streams as one batch (the longest first, so that the streams still
        running are a prefix). No padding here: the caller chose the frames and the count."""
        order = sorted(range(len(windowed)), key=lambda i: -windowed[i][1])
        counts = [windowed[i][1] for i in order]
        states = self.init_states(len(order))
        hyps, decoder_out = self.model.initial_hyps(len(order))
        for k in range(max(counts, default=0)):
            active = sum(count > k for count in counts)
            start = k * self.decode_chunk_len
            x = np.stack([windowed[i][0][start : start + self.window] for i in order[:active]])
            encoder_out, states = self.run_chunk(x, self.first(states, active))
            for t in range(encoder_out.shape[1]):
                self.model.greedy_step(encoder_out[:, t], hyps, decoder_out)
        results: List[List[int]] = [[] for _ in order]
        for position, index in enumerate(order):
            results[index] = hyps[position][self.context_size :]
        return results

    def decode_features(self, x: np.ndarray, x_lens: np.ndarray) -> List[List[int]]:
        """Padded fbank (N, T, 80) and lengths -> N token-id lists (OnnxTransducer's interface)."""
        return self.decode_utterances([x[i, : int(n)] for i, n in enumerate(x_lens)])
