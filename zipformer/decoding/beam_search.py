"""Transducer searches: greedy (batched, and single-utterance with several symbols per frame),
modified beam search (batched, one symbol per frame) and beam search (single utterance).

The searches use only `model.decoder` (a stateless Decoder: the last `context_size` tokens in,
(N, 1, decoder_dim) out) and `model.joiner`. Every hypothesis starts from the context
[-1, ..., -1, blank]: -1 means "no token" and gives a zero embedding. Returned token lists do not
include that context. Searches run without autograd.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

# A hypothesis is keyed by its full token sequence, context included; its value is a log-prob.
Hyps = Dict[Tuple[int, ...], float]


def _initial_context(model: nn.Module) -> Tuple[int, ...]:
    decoder = model.decoder
    return (-1,) * (decoder.context_size - 1) + (decoder.blank_id,)


def _project_decoder(model: nn.Module, contexts: List[Tuple[int, ...]], device: torch.device) -> torch.Tensor:
    """Projected decoder output for each context (the last `context_size` tokens): (len(contexts), joiner_dim)."""
    y = torch.tensor(contexts, dtype=torch.int64, device=device)
    return model.joiner.decoder_proj(model.decoder(y, need_pad=False)).squeeze(1)


def _logaddexp(a: float, b: float) -> float:
    high = max(a, b)
    if high == -math.inf:
        return high
    return high + math.log1p(math.exp(-abs(a - b)))


def _check_batch(encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor) -> None:
    if encoder_out.ndim != 3:
        raise ValueError(f"encoder_out must be (N, T, C), got shape {tuple(encoder_out.shape)}")
    if encoder_out_lens.shape != (encoder_out.size(0),):
        raise ValueError(
            f"encoder_out_lens must be ({encoder_out.size(0)},) to match encoder_out, "
            f"got shape {tuple(encoder_out_lens.shape)}"
        )
    if encoder_out.size(0) > 0 and not 0 <= encoder_out_lens.min() <= encoder_out_lens.max() <= encoder_out.size(1):
        raise ValueError(f"encoder_out_lens must lie in [0, {encoder_out.size(1)}], got {encoder_out_lens.tolist()}")


def _check_single(encoder_out: torch.Tensor) -> None:
    if encoder_out.ndim != 3 or encoder_out.size(0) != 1:
        raise ValueError(f"encoder_out must be (1, T, C) for a single utterance, got shape {tuple(encoder_out.shape)}")


def _start_batch(
    model: nn.Module, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor, searches: Sequence, what: str
) -> Tuple[torch.Tensor, List[int], torch.Tensor]:
    """The start both batched searches share: check the shapes and that `searches` (one per
    utterance, named `what` in errors) fits the batch; sort the utterances longest first, so that
    those still running at frame t are a prefix of the batch; project the encoder output once.
    Returns (order (N,), sorted lengths, encoder_proj (N, T, joiner_dim) in that order)."""
    _check_batch(encoder_out, encoder_out_lens)
    if len(searches) != encoder_out.size(0):
        raise ValueError(f"got {len(searches)} {what} for a batch of {encoder_out.size(0)}")
    order = torch.argsort(encoder_out_lens, descending=True, stable=True)
    return order, encoder_out_lens[order].tolist(), model.joiner.encoder_proj(encoder_out[order])


def _best_by_length_norm(hyps: Hyps) -> Tuple[int, ...]:
    """The best hypothesis by log_prob / len(ys); len counts the context entries, as icefall's does."""
    return max(hyps.items(), key=lambda item: item[1] / len(item[0]))[0]


@torch.no_grad()
def greedy_search_batch(
    model: nn.Module,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    blank_penalty: float = 0.0,
) -> List[List[int]]:
    """Greedy search, at most one symbol per frame, over a padded batch.

    Args:
      encoder_out: (N, T, encoder_dim), batch first; frames at or past an utterance's length are ignored.
      encoder_out_lens: (N,) number of valid frames per utterance.
      blank_penalty: subtracted from the blank logit before the argmax.
    Returns:
      N lists of token ids, in the batch's order.
    """
    hyps = [initial_hyp(model) for _ in range(encoder_out.size(0))]
    greedy_search_continue(model, encoder_out, encoder_out_lens, hyps, blank_penalty)
    context_size = model.decoder.context_size
    return [h[context_size:] for h in hyps]


@torch.no_grad()
def greedy_search_continue(
    model: nn.Module,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    hyps: List[List[int]],
    blank_penalty: float = 0.0,
) -> None:
    """greedy_search_batch over more frames of utterances already partly decoded (streaming):
    `hyps` are the N token lists so far, context included, and are extended in place."""
    order, lens, encoder_proj = _start_batch(model, encoder_out, encoder_out_lens, hyps, "hypotheses")
    blank_id = model.decoder.blank_id
    context_size = model.decoder.context_size
    device = encoder_out.device
    if encoder_out.size(0) == 0:
        return

    sorted_hyps = [hyps[i] for i in order.tolist()]  # the same lists, extended in place
    decoder_proj = _project_decoder(model, [tuple(h[-context_size:]) for h in sorted_hyps], device)
    num_active = len(lens)
    for t in range(lens[0]):
        while lens[num_active - 1] <= t:
            num_active -= 1
        logits = model.joiner(encoder_proj[:num_active, t], decoder_proj[:num_active], project_input=False)
        if blank_penalty != 0.0:
            logits[:, blank_id] -= blank_penalty
        tokens = logits.argmax(dim=-1).tolist()
        emitted = [i for i, token in enumerate(tokens) if token != blank_id]
        if emitted:
            for i in emitted:
                sorted_hyps[i].append(tokens[i])
            # Only rows that emitted have a new context.
            decoder_proj[emitted] = _project_decoder(
                model, [tuple(sorted_hyps[i][-context_size:]) for i in emitted], device
            )


@torch.no_grad()
def greedy_search(
    model: nn.Module,
    encoder_out: torch.Tensor,
    max_sym_per_frame: int,
    max_sym_per_utt: int = 1000,
) -> List[int]:
    """Greedy search for one utterance, emitting up to `max_sym_per_frame` symbols per frame.

    Args:
      encoder_out: (1, T, encoder_dim).
      max_sym_per_frame: symbols allowed per frame before moving on to the next one (>= 1).
      max_sym_per_utt: stop after this many symbols (icefall's guard against runaway output).
    Returns:
      The token ids.
    """
    _check_single(encoder_out)
    if max_sym_per_frame < 1:
        raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
    blank_id = model.decoder.blank_id
    context_size = model.decoder.context_size
    device = encoder_out.device
    encoder_proj = model.joiner.encoder_proj(encoder_out[0])  # (T, joiner_dim)

    hyp = list(_initial_context(model))
    decoder_proj = _project_decoder(model, [tuple(hyp)], device)  # (1, joiner_dim)
    t = 0
    sym_this_frame = 0
    num_emitted = 0
    while t < encoder_proj.size(0) and num_emitted < max_sym_per_utt:
        if sym_this_frame >= max_sym_per_frame:
            t, sym_this_frame = t + 1, 0
            continue
        logits = model.joiner(encoder_proj[t : t + 1], decoder_proj, project_input=False)
        token = int(logits.argmax(dim=-1))
        if token == blank_id:
            t, sym_this_frame = t + 1, 0
            continue
        hyp.append(token)
        decoder_proj = _project_decoder(model, [tuple(hyp[-context_size:])], device)
        sym_this_frame += 1
        num_emitted += 1
    return hyp[context_size:]


@torch.no_grad()
def modified_beam_search(
    model: nn.Module,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    beam: int = 4,
) -> List[List[int]]:
    """Beam search with one symbol per frame, over a padded batch.

    At each frame every hypothesis is scored as log_softmax(joiner logits) + its log-prob, and the
    best `beam` (hypothesis, token) pairs of the utterance survive; blank keeps the tokens unchanged.
    Survivors with equal token sequences are merged (log-add of their probabilities). The answer is
    the hypothesis with the best log_prob / len(ys), len(ys) counting the context entries.

    Args:
      encoder_out: (N, T, encoder_dim), batch first.
      encoder_out_lens: (N,) number of valid frames per utterance.
      beam: hypotheses kept per utterance.
    Returns:
      N lists of token ids, in the batch's order.
    """
    beams: List[Hyps] = [initial_beam(model) for _ in range(encoder_out.size(0))]
    modified_beam_search_continue(model, encoder_out, encoder_out_lens, beams, beam)
    return [best_tokens(model, hyps) for hyps in beams]


def initial_hyp(model: nn.Module) -> List[int]:
    """A greedy hypothesis before its first frame: the context alone."""
    return list(_initial_context(model))


def initial_beam(model: nn.Module) -> Hyps:
    """The beam of an utterance before its first frame: the context alone, log-prob 0."""
    return {_initial_context(model): 0.0}


def best_tokens(model: nn.Module, hyps: Hyps) -> List[int]:
    """The tokens (context removed) of a beam's best hypothesis by length-normalised log-prob."""
    return list(_best_by_length_norm(hyps)[model.decoder.context_size :])


@torch.no_grad()
def modified_beam_search_continue(
    model: nn.Module,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    beams: List[Hyps],
    beam: int = 4,
) -> None:
    """modified_beam_search over more frames of utterances already partly decoded (streaming):
    `beams` holds each utterance's hypotheses so far and is updated in place."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    order, lens, encoder_proj = _start_batch(model, encoder_out, encoder_out_lens, beams, "beams")
    blank_id = model.decoder.blank_id
    context_size = model.decoder.context_size
    device = encoder_out.device
    if encoder_out.size(0) == 0:
        return

    sorted_beams = [beams[i] for i in order.tolist()]
    num_active = len(lens)
    for t in range(lens[0]):
        while lens[num_active - 1] <= t:
            num_active -= 1
        flat = [(utt, ys, log_prob) for utt in range(num_active) for ys, log_prob in sorted_beams[utt].items()]
        decoder_proj = _project_decoder(model, [ys[-context_size:] for _, ys, _ in flat], device)  # (H, joiner_dim)
        utt_of_hyp = torch.tensor([utt for utt, _, _ in flat], device=device)
        logits = model.joiner(encoder_proj[utt_of_hyp, t], decoder_proj, project_input=False)  # (H, V)
        hyp_log_probs = torch.tensor([log_prob for _, _, log_prob in flat], dtype=logits.dtype, device=device)
        scores = logits.log_softmax(dim=-1) + hyp_log_probs.unsqueeze(1)
        vocab_size = scores.size(1)

        start = 0
        for utt in range(num_active):
            count = len(sorted_beams[utt])
            candidates = scores[start : start + count].reshape(-1)
            values, indexes = candidates.topk(min(beam, candidates.numel()))
            new_hyps: Hyps = {}
            for value, index in zip(values.tolist(), indexes.tolist()):
                ys = flat[start + index // vocab_size][1]
                token = index % vocab_size
                new_ys = ys if token == blank_id else ys + (token,)
                new_hyps[new_ys] = _logaddexp(new_hyps[new_ys], value) if new_ys in new_hyps else value
            sorted_beams[utt] = new_hyps
            start += count
    for position, original_index in enumerate(order.tolist()):
        beams[original_index] = sorted_beams[position]


@torch.no_grad()
def beam_search(
    model: nn.Module,
    encoder_out: torch.Tensor,
    beam: int = 4,
    max_sym_per_frame: int = 10,
) -> List[int]:
    """Standard transducer beam search (Graves 2012, Algorithm 1, without prefix search) for one utterance.

    Per frame: A starts as the previous frame's beam B, and B empties. Repeatedly take the most
    probable hypothesis of A: its blank extension goes to B, and its extensions by the non-blank
    symbols among the `beam + 1` most probable go back to A (equal token sequences merge by log-add). The frame ends once B holds
    `beam` hypotheses more probable than A's best; B keeps its `beam` best. The answer is the best
    hypothesis of the last frame by log_prob / len(ys), len(ys) counting the context entries.

    Args:
      encoder_out: (1, T, encoder_dim).
      beam: hypotheses kept per frame.
      max_sym_per_frame: a hypothesis that emitted this many symbols in the current frame gets
        only its blank extension. icefall has no such bound, and loops forever on a model whose
        blank log-prob is so low that non-blank extensions cost exactly 0.0; real models do not
        get near 10 symbols per frame, so results are icefall's.
    Returns:
      The token ids.
    """
    _check_single(encoder_out)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if max_sym_per_frame < 1:
        raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
    blank_id = model.decoder.blank_id
    context_size = model.decoder.context_size
    device = encoder_out.device
    encoder_proj = model.joiner.encoder_proj(encoder_out[0])  # (T, joiner_dim)

    decoder_cache: Dict[Tuple[int, ...], torch.Tensor] = {}

    def log_probs_at(t: int, ys: Tuple[int, ...], frame_cache: Dict[Tuple[int, ...], torch.Tensor]) -> torch.Tensor:
        """(V,) log-probs of the next symbol after `ys` at frame t; both depend only on the context."""
        context = ys[-context_size:]
        if context not in frame_cache:
            if context not in decoder_cache:
                decoder_cache[context] = _project_decoder(model, [context], device)
            logits = model.joiner(encoder_proj[t : t + 1], decoder_cache[context], project_input=False)
            frame_cache[context] = logits.log_softmax(dim=-1)[0]
        return frame_cache[context]

    B: Hyps = {_initial_context(model): 0.0}
    for t in range(encoder_proj.size(0)):
        A: Hyps = B
        sym_this_frame = {ys: 0 for ys in A}
        B = {}
        frame_cache: Dict[Tuple[int, ...], torch.Tensor] = {}
        while A:
            ys_star = max(A, key=A.__getitem__)
            log_prob_star = A.pop(ys_star)
            log_probs = log_probs_at(t, ys_star, frame_cache)
            blank_score = log_prob_star + float(log_probs[blank_id])
            B[ys_star] = _logaddexp(B[ys_star], blank_score) if ys_star in B else blank_score

            if sym_this_frame[ys_star] < max_sym_per_frame:
                values, tokens = log_probs.topk(min(beam + 1, log_probs.numel()))
                for value, token in zip(values.tolist(), tokens.tolist()):
                    if token == blank_id:
                        continue
                    new_ys = ys_star + (token,)
                    score = log_prob_star + value
                    A[new_ys] = _logaddexp(A[new_ys], score) if new_ys in A else score
                    # Merged paths keep the largest count, so that no path exceeds the bound.
                    sym_this_frame[new_ys] = max(sym_this_frame.get(new_ys, 0), sym_this_frame[ys_star] + 1)

            if A:
                best_in_a = max(A.values())
                if sum(1 for score in B.values() if score > best_in_a) >= beam:
                    break
        B = dict(sorted(B.items(), key=lambda item: item[1], reverse=True)[:beam])
    return list(_best_by_length_norm(B)[context_size:])
