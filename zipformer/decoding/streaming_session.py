"""Real streaming decoding of cut sets: every utterance is fed chunk by chunk, many streams at once.

Each stream owns its encoder states and its search state (a greedy hypothesis or a beam). At
every step one chunk of each active stream is encoded as one batch (states stacked, then split
again), the search continues over the chunk's frames, and finished streams leave the batch; new
streams join as others finish (icefall's streaming_decode.py scheduling). Result files, model
loading and recipes are decoding.py's: `StreamingDecodingSession` only changes how a test set
is decoded and puts results under exp_dir/streaming/<decoding_method>.
"""
import argparse
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Tuple

import torch
from lhotse import CutSet
from torch import nn

from zipformer.checkpoints.config import flags_given
from zipformer.checkpoints.loader import DecodingRecipe
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import int_at_least
from zipformer.core.params import AttributeDict
from zipformer.decoding import session as decoding
from zipformer.decoding.beam_search import (
    best_tokens,
    greedy_search_continue,
    initial_beam,
    initial_hyp,
    modified_beam_search_continue,
)
from zipformer.decoding.session import DecodingSession, Result
from zipformer.model.frontend import FRAME_SHIFT
from zipformer.model.streaming import (
    EMBED_LOOK_AHEAD,
    append_tail_padding,
    get_init_states,
    num_chunks,
    pad_for_chunks,
    stack_states,
    streaming_chunk_config,
    streaming_forward,
    unstack_states,
)

STREAMING_METHODS = ("greedy_search", "modified_beam_search")


def add_streaming_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Streaming decoding")
    group.add_argument(
        "--num-decode-streams", type=int_at_least(1), default=2000,
        help="Streams decoded in parallel: one chunk of each is encoded as one batch.",
    )


def check_streaming_flags(params: AttributeDict) -> Tuple[int, int]:
    """(chunk size, left context) to stream with; UserError naming the flag otherwise."""
    if not params.causal:
        raise UserError(
            "streaming decoding needs a causal model: pass --causal 1 --chunk-size C "
            "--left-context-frames L"
        )
    if params.decoding_method not in STREAMING_METHODS:
        raise UserError(
            f"--decoding-method {params.decoding_method} is not available for streaming: use "
            f"one of {', '.join(STREAMING_METHODS)}"
        )
    if params.max_sym_per_frame != 1:
        raise UserError("streaming greedy_search emits at most one symbol per frame: use --max-sym-per-frame 1")
    return streaming_chunk_config(params)


@dataclass
class Stream:
    """One utterance being decoded: padded features, encoder states, search state."""

    cut_id: str
    ref: List[str]
    features: torch.Tensor  # (n·2C + 13, F)
    num_chunks: int
    states: List[torch.Tensor]
    search_state: Any  # greedy: token list with context; modified_beam_search: a beam
    done_chunks: int = 0

    def window(self, chunk_size: int) -> torch.Tensor:
        start = 2 * chunk_size * self.done_chunks
        return self.features[start : start + 2 * chunk_size + EMBED_LOOK_AHEAD]

    @property
    def finished(self) -> bool:
        return self.done_chunks >= self.num_chunks


@dataclass
class StreamingStats:
    """Compute time of the chunk steps (encoder and search), for the real-time factor."""

    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    steps: int = 0
    stream_chunks: int = 0
    step_seconds: List[float] = field(default_factory=list)

    def summary(self, chunk_size: int) -> str:
        rtf = self.compute_seconds / max(self.audio_seconds, 1e-9)
        per_step = 1000 * self.compute_seconds / max(self.steps, 1)
        per_chunk = 1000 * self.compute_seconds / max(self.stream_chunks, 1)
        slowest = 1000 * max(self.step_seconds, default=0.0)
        return (
            f"real-time factor {rtf:.4f}; {self.steps} chunk steps of "
            f"{self.stream_chunks / max(self.steps, 1):.1f} streams on average: {per_step:.1f} ms "
            f"per step (slowest {slowest:.1f} ms), {per_chunk:.2f} ms per stream-chunk of "
            f"{2 * chunk_size * 10} ms audio"
        )


class StreamingDecoder:
    """Decodes utterances chunk by chunk with a causal model, `max_streams` at a time."""

    def __init__(self, model: nn.Module, params: AttributeDict, chunk_size: int) -> None:
        self.model = model
        self.params = params
        self.chunk_size = chunk_size
        self.device = next(model.parameters()).device
        self.stats = StreamingStats()

    def new_stream(self, cut_id: str, ref: List[str], features: torch.Tensor) -> Stream:
        """A stream for one utterance's (T, F) features: tail padding, then whole chunks."""
        lens = torch.tensor([features.shape[0]], device=features.device)
        with_tail = append_tail_padding(features.unsqueeze(0), lens)[0][0]
        self.stats.audio_seconds += features.shape[0] * FRAME_SHIFT
        greedy = self.params.decoding_method == "greedy_search"
        search_state = initial_hyp(self.model) if greedy else initial_beam(self.model)
        return Stream(
            cut_id=cut_id,
            ref=ref,
            features=pad_for_chunks(with_tail, self.chunk_size).to(self.device),
            num_chunks=num_chunks(with_tail.shape[0], self.chunk_size),
            states=get_init_states(self.model, 1, self.device),
            search_state=search_state,
        )

    @torch.no_grad()
    def step(self, streams: List[Stream]) -> torch.Tensor:
        """Encode and search one chunk of every stream; returns the encoder output (N, C/2, D)."""
        start = time.perf_counter()
        windows = torch.stack([s.window(self.chunk_size) for s in streams])
        lens = torch.full((len(streams),), windows.shape[1], device=self.device)
        encoder_out, out_lens, states = streaming_forward(
            self.model, windows, lens, stack_states([s.states for s in streams])
        )
        search_states = [s.search_state for s in streams]
        if self.params.decoding_method == "greedy_search":
            greedy_search_continue(self.model, encoder_out, out_lens, search_states)
        else:
            modified_beam_search_continue(
                self.model, encoder_out, out_lens, search_states, beam=self.params.beam_size
            )
        for stream, stream_states, search_state in zip(streams, unstack_states(states), search_states):
            stream.states, stream.search_state = stream_states, search_state
            stream.done_chunks += 1
        elapsed = time.perf_counter() - start
        self.stats.compute_seconds += elapsed
        self.stats.step_seconds.append(elapsed)
        self.stats.steps += 1
        self.stats.stream_chunks += len(streams)
        return encoder_out

    def tokens(self, stream: Stream) -> List[int]:
        if self.params.decoding_method == "greedy_search":
            return stream.search_state[self.model.decoder.context_size :]
        return best_tokens(self.model, stream.search_state)

    def decode(self, utterances: Iterable[Tuple[str, List[str], torch.Tensor]], max_streams: int) -> Iterator[Tuple[Stream, List[int]]]:
        """Yield (stream, tokens) for each utterance (cut_id, ref words, (T, F) features) as it
        finishes. A chunk step runs whenever `max_streams` streams are active, and at the end
        until none is left."""
        active: List[Stream] = []
        pending = iter(utterances)
        exhausted = False
        while active or not exhausted:
            if not exhausted and len(active) < max_streams:
                utterance = next(pending, None)
                if utterance is None:
                    exhausted = True
                else:
                    active.append(self.new_stream(*utterance))
                continue
            self.step(active)
            for stream in [s for s in active if s.finished]:
                yield stream, self.tokens(stream)
            active = [s for s in active if not s.finished]


def utterances_of(dl: torch.utils.data.DataLoader) -> Iterator[Tuple[str, List[str], torch.Tensor]]:
    """(cut_id, reference words, (T, F) features) of every cut, from decode.py's batches."""
    for batch in dl:
        supervisions = batch["supervisions"]
        for i, cut in enumerate(supervisions["cut"]):
            num_frames = int(supervisions["num_frames"][i])
            yield cut.id, supervisions["text"][i].split(), batch["inputs"][i, :num_frames]


class StreamingDecodingSession(DecodingSession):
    """decoding.py's session, decoding every test set chunk by chunk."""

    results_subdir = "streaming"
    full_context_by_default = False

    def __init__(self, recipe: DecodingRecipe, args: argparse.Namespace, given: frozenset = frozenset()) -> None:
        """`given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given)."""
        super().__init__(recipe, args, given)
        # After the checkpoint's configuration is taken: it says whether the model is causal.
        self.chunk_size, _ = check_streaming_flags(self.params)

    def decode_test_set(self, name: str, cuts: CutSet) -> List[Result]:
        decoder = StreamingDecoder(self.model, self.params, self.chunk_size)
        results: List[Result] = []
        streams = decoder.decode(utterances_of(self.data.test_dataloaders(cuts)), self.params.num_decode_streams)
        for stream, tokens in streams:
            results.append((stream.cut_id, stream.ref, self.sp.decode(tokens).split()))
        logging.info(f"[{name}] streamed {len(results)} utterances: {decoder.stats.summary(self.chunk_size)}")
        return results


def get_parser(recipe: DecodingRecipe) -> argparse.ArgumentParser:
    parser = decoding.get_parser(recipe)
    add_streaming_arguments(parser)
    return parser


def main(recipe: DecodingRecipe) -> None:
    parser = get_parser(recipe)
    args = parser.parse_args()
    with exit_on_user_error():
        session = StreamingDecodingSession(recipe, args, flags_given(parser))
        session.decode_all(session.suffix)
        logging.info("Done!")
