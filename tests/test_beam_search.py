"""Searches on tiny models with a real Decoder and Joiner.

Most tests use a "table" model: the encoder frame is a one-hot "frame type" f, and the weights are
set so that the joiner's logits are exactly
    frame_table[f] + last_table[last token] + older_is_blank * older_blank_row,
a table we choose, which makes every search's answer computable by hand.
"""
import itertools
import math

import pytest
import torch
from torch import nn

from zipformer.decoding.beam_search import (
    beam_search,
    best_tokens,
    greedy_search,
    greedy_search_batch,
    greedy_search_continue,
    initial_beam,
    modified_beam_search,
    modified_beam_search_continue,
)
from zipformer.model.decoder import Decoder
from zipformer.model.joiner import Joiner

BLANK = 0
NEG = -30.0  # a logit for "never": probability about e^-30




class TinyModel(nn.Module):
    def __init__(self, decoder: Decoder, joiner: Joiner) -> None:
        super().__init__()
        self.decoder = decoder
        self.joiner = joiner


def table_model(frame_table: torch.Tensor, last_table: torch.Tensor, older_blank_row=None) -> TinyModel:
    """frame_table: (F, V) logits per frame type; last_table: (V, V) logits added per last token
    (row 0: the last token is blank); older_blank_row: (V,) added when the older of the two context
    tokens is blank (not when it is -1)."""
    num_frame_types, vocab_size = frame_table.shape
    # Decoder channels 0..V-1: "last token is c"; channel V: "older token is blank".
    decoder_dim = 4 * math.ceil((vocab_size + 1) / 4)
    decoder = Decoder(vocab_size=vocab_size, decoder_dim=decoder_dim, blank_id=BLANK, context_size=2)
    joiner = Joiner(
        encoder_dim=num_frame_types, decoder_dim=decoder_dim, joiner_dim=num_frame_types + decoder_dim, vocab_size=vocab_size
    )
    with torch.no_grad():
        decoder.embedding.weight.zero_()
        for token in range(vocab_size):
            decoder.embedding.weight[token, token] = 1.0
        decoder.embedding.weight[BLANK, vocab_size] = 1.0
        # Grouped conv (groups of 4 channels): output c reads its own channel c, at the last
        # position for c < V, at the older position for c = V.
        decoder.conv.weight.zero_()
        for c in range(vocab_size):
            decoder.conv.weight[c, c % 4, 1] = 1.0
        decoder.conv.weight[vocab_size, vocab_size % 4, 0] = 1.0

        # tanh(20) == 1.0 in float32: an active channel contributes exactly its output column.
        for linear in (joiner.encoder_proj, joiner.decoder_proj, joiner.output_linear):
            linear.weight.zero_()
            linear.bias.zero_()
        for f in range(num_frame_types):
            joiner.encoder_proj.weight[f, f] = 20.0
        for c in range(decoder_dim):
            joiner.decoder_proj.weight[num_frame_types + c, c] = 20.0
        joiner.output_linear.weight[:, :num_frame_types] = frame_table.T
        joiner.output_linear.weight[:, num_frame_types : num_frame_types + vocab_size] = last_table.T
        if older_blank_row is not None:
            joiner.output_linear.weight[:, num_frame_types + vocab_size] = older_blank_row
    return TinyModel(decoder, joiner).eval()


def frames(frame_types, num_frame_types, pad_to=None, pad_type=None) -> torch.Tensor:
    """(1, T, F) one-hot encoder output; padding frames get `pad_type` (should be ignored)."""
    types = list(frame_types) + [pad_type] * ((pad_to or len(frame_types)) - len(frame_types))
    return torch.nn.functional.one_hot(torch.tensor(types), num_frame_types).float().unsqueeze(0)


def log_probs(*probs):
    return torch.tensor([math.log(p) if p > 0 else NEG for p in probs])


def batch_of(utterances, num_frame_types, pad_type):
    """Pad per-utterance frame types into (N, T, F) and (N,) lengths."""
    max_len = max(len(u) for u in utterances)
    encoder_out = torch.cat([frames(u, num_frame_types, max_len, pad_type) for u in utterances])
    return encoder_out, torch.tensor([len(u) for u in utterances])


# "Echo": frame type k wants token k (type 0 wants blank), whatever the decoder says.
VOCAB = 5
ECHO_FRAMES = 10.0 * torch.eye(VOCAB)
ECHO_LAST = torch.zeros(VOCAB, VOCAB)
# "Collapse": as echo, but after a token, that token is strongly discouraged and blank favoured,
# so frames of one type in a row emit the token once. The logits depend on the decoder.
COLLAPSE_LAST = torch.zeros(VOCAB, VOCAB)
for _token in range(1, VOCAB):
    COLLAPSE_LAST[_token, _token] = -30.0
    COLLAPSE_LAST[_token, BLANK] = 5.0


def all_searches(model, encoder_out):
    """Results of the four searches on one utterance (1, T, F)."""
    lens = torch.tensor([encoder_out.size(1)])
    return {
        "greedy_search_batch": greedy_search_batch(model, encoder_out, lens)[0],
        "greedy_search": greedy_search(model, encoder_out, max_sym_per_frame=1),
        "modified_beam_search": modified_beam_search(model, encoder_out, lens, beam=4)[0],
        "beam_search": beam_search(model, encoder_out, beam=4),
    }


def test_table_model_logits_are_the_table():
    model = table_model(ECHO_FRAMES, COLLAPSE_LAST)
    enc = model.joiner.encoder_proj(frames([3], VOCAB)[0])
    dec = model.joiner.decoder_proj(model.decoder(torch.tensor([[0, 3]]), need_pad=False))[:, 0]
    logits = model.joiner(enc, dec, project_input=False)[0]
    assert torch.equal(logits, ECHO_FRAMES[3] + COLLAPSE_LAST[3])


def test_all_searches_find_the_frame_tokens():
    model = table_model(ECHO_FRAMES, COLLAPSE_LAST)
    encoder_out = frames([1, 0, 2, 4, 0, 0, 3], VOCAB)
    for name, tokens in all_searches(model, encoder_out).items():
        assert tokens == [1, 2, 4, 3], name


def test_repeated_frames_collapse_only_with_the_decoder_in_the_loop():
    # The stateless decoder sees tokens, not frames: a blank frame between two 2-frames does not
    # make the collapse model emit 2 again.
    encoder_out = frames([2, 2, 0, 2, 3, 3], VOCAB)
    collapse = table_model(ECHO_FRAMES, COLLAPSE_LAST)
    for name, tokens in all_searches(collapse, encoder_out).items():
        assert tokens == [2, 3], name
    # Echo ignores the decoder. Its frames never prefer blank, so beam_search (several symbols per
    # frame) is covered by the next tests.
    echo = table_model(ECHO_FRAMES, ECHO_LAST)
    lens = torch.tensor([6])
    assert greedy_search_batch(echo, encoder_out, lens) == [[2, 2, 2, 3, 3]]
    assert greedy_search(echo, encoder_out, max_sym_per_frame=1) == [2, 2, 2, 3, 3]
    assert modified_beam_search(echo, encoder_out, lens) == [[2, 2, 2, 3, 3]]


def test_greedy_search_several_symbols_per_frame():
    encoder_out = frames([1, 0, 2], VOCAB)
    echo = table_model(ECHO_FRAMES, ECHO_LAST)
    assert greedy_search(echo, encoder_out, max_sym_per_frame=1) == [1, 2]
    assert greedy_search(echo, encoder_out, max_sym_per_frame=3) == [1, 1, 1, 2, 2, 2]
    assert greedy_search(echo, encoder_out, max_sym_per_frame=3, max_sym_per_utt=4) == [1, 1, 1, 2]
    # With the decoder discouraging repeats, the second symbol of a frame is blank.
    collapse = table_model(ECHO_FRAMES, COLLAPSE_LAST)
    assert greedy_search(collapse, encoder_out, max_sym_per_frame=3) == [1, 2]


def test_beam_search_bound_stops_a_model_that_never_emits_blank():
    # Token logits 100 above blank: in float32 a token's log-prob is exactly 0.0, so without the
    # bound hypotheses would grow forever without losing probability and the frame would never end.
    model = table_model(100.0 * torch.eye(VOCAB)[1:], ECHO_LAST)
    tokens = beam_search(model, frames([0, 1, 3], VOCAB - 1), beam=2, max_sym_per_frame=3)
    assert 0 < len(tokens) <= 3 * 3
    assert set(tokens) <= {1, 2, 4}


def test_two_symbols_in_one_frame():
    # In the frame, token 1 is likely first; after 1, token 2; after 2, blank.
    frame_table = torch.tensor([[NEG, 10.0, NEG]])
    last_table = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 50.0], [60.0, 0.0, 0.0]])
    model = table_model(frame_table, last_table)
    encoder_out = frames([0], 1)
    assert greedy_search(model, encoder_out, max_sym_per_frame=1) == [1]
    assert greedy_search(model, encoder_out, max_sym_per_frame=3) == [1, 2]
    assert greedy_search_batch(model, encoder_out, torch.tensor([1])) == [[1]]
    assert modified_beam_search(model, encoder_out, torch.tensor([1])) == [[1]]
    assert beam_search(model, encoder_out) == [1, 2]
    # Bound 1: [1] may not take 2 and must pay P(blank | 1) ~ e^-50 to leave the frame, while [2]
    # and [] cost ~ e^-40 each; [2] wins by length normalisation.
    assert beam_search(model, encoder_out, max_sym_per_frame=1) == [2]


def test_merging_equal_token_sequences_changes_the_answer():
    # Two frame types, vocab {blank, a=1, b=2}. Frame 1: P(blank, a, b) = (0.34, 0.36, 0.30).
    # Frame 2 after blank: P(blank, b) = (0.3, 0.7). After any token, blank is certain.
    # Greedy takes a. Summed over alignments: [b] = 0.30 + 0.34 * 0.7 = 0.538 > [a] = 0.36.
    frame_table = torch.stack([log_probs(0.34, 0.36, 0.30), log_probs(0.3, 0.0, 0.7)])
    last_table = torch.zeros(3, 3)
    last_table[1:, BLANK] = 60.0  # after a token: blank (beam_search would otherwise add more)
    model = table_model(frame_table, last_table)
    encoder_out = frames([0, 1], 2)
    results = all_searches(model, encoder_out)
    assert results["greedy_search_batch"] == results["greedy_search"] == [1]
    assert results["modified_beam_search"] == [2]
    assert results["beam_search"] == [2]


def test_final_choice_normalises_by_length_including_context():
    # One frame, P(blank) = 0.5, P(a) = 0.45, and blank after any token: the most probable
    # hypothesis is [], but log(0.45) / 3 > log(0.5) / 2, so the length-normalised choice is [a].
    last_table = torch.zeros(3, 3)
    last_table[1:, BLANK] = 60.0
    model = table_model(log_probs(0.5, 0.45, 0.05).unsqueeze(0), last_table)
    results = all_searches(model, frames([0], 1))
    assert results["greedy_search"] == []
    assert results["modified_beam_search"] == [1]
    assert results["beam_search"] == [1]

    # Frame 1 emits a then blank, surely. Frame 2 after a: P(blank) = 0.6, P(b) = 0.4, then blank.
    # [a] (len 3 with the context) wins: log(0.6)/3 > log(0.4)/4. Without the context entries
    # [a, b] would: log(0.4)/2 > log(0.6)/1.
    frame_table = torch.tensor([[NEG, 0.0, NEG], [0.0, NEG, 60.0 - math.log(1.5)]])
    last_table = torch.tensor([[0.0, 0.0, 0.0], [60.0, 0.0, 0.0], [0.0, 0.0, -100.0]])
    model = table_model(frame_table, last_table)
    results = all_searches(model, frames([0, 1], 2))
    assert results["modified_beam_search"] == [1]
    assert results["beam_search"] == [1]


def test_initial_context_is_minus_one_then_blank():
    # Token 1 is likely only when the older context token is -1 (zero embedding), not blank:
    # with [-1, blank] the searches emit [1]; a [blank, blank] start would emit nothing.
    older_blank_row = torch.tensor([0.0, -10.0, 0.0])
    frame_table = torch.tensor([[0.0, 5.0, NEG]])
    last_table = torch.zeros(3, 3)
    last_table[1, 1] = -10.0
    model = table_model(frame_table, last_table, older_blank_row)
    for name, tokens in all_searches(model, frames([0], 1)).items():
        assert tokens == [1], name


def test_negative_context_id_gives_zero_embedding():
    torch.manual_seed(0)
    decoder = Decoder(vocab_size=6, decoder_dim=8, blank_id=0, context_size=2)
    with_minus_one = decoder(torch.tensor([[-1, 3]]), need_pad=False)
    # The same computation with the first slot's embedding set to zero by hand.
    embedding = torch.stack([torch.zeros(8), decoder.embedding.weight[3]], dim=1).unsqueeze(0)  # (1, 8, 2)
    expected = torch.relu(decoder.conv(embedding)).permute(0, 2, 1)
    torch.testing.assert_close(with_minus_one, expected)
    assert not torch.allclose(with_minus_one, decoder(torch.tensor([[0, 3]]), need_pad=False))


def test_blank_penalty_turns_blank_frames_into_tokens():
    # Frame type 0 prefers blank by 1.0 over token 1; a penalty of 2 flips it.
    model = table_model(torch.tensor([[1.0, 0.0, NEG], [NEG, 5.0, NEG]]), torch.zeros(3, 3))
    encoder_out, lens = frames([0, 1, 0], 2), torch.tensor([3])
    assert greedy_search_batch(model, encoder_out, lens) == [[1]]
    assert greedy_search_batch(model, encoder_out, lens, blank_penalty=2.0) == [[1, 1, 1]]


def test_padded_batch_ignores_padding_and_keeps_order():
    model = table_model(ECHO_FRAMES, COLLAPSE_LAST)
    utterances = [[1, 2], [3, 0, 4, 4, 1], [], [2, 2, 0, 1, 3], [4]]
    expected = [[1, 2], [3, 4, 1], [], [2, 1, 3], [4]]
    # Padding frames want token 3; reading them would add 3s.
    encoder_out, lens = batch_of(utterances, VOCAB, pad_type=3)
    assert greedy_search_batch(model, encoder_out, lens) == expected
    assert modified_beam_search(model, encoder_out, lens, beam=4) == expected


def random_model(vocab_size=7, dim=8, seed=0) -> TinyModel:
    torch.manual_seed(seed)
    decoder = Decoder(vocab_size=vocab_size, decoder_dim=dim, blank_id=BLANK, context_size=2)
    joiner = Joiner(encoder_dim=dim, decoder_dim=dim, joiner_dim=dim, vocab_size=vocab_size)
    with torch.no_grad():  # larger weights than the init, for peakier, more varied outputs
        joiner.output_linear.weight.mul_(8.0)
        decoder.embedding.weight.mul_(3.0)
    return TinyModel(decoder, joiner).double().eval()


def test_batch_equals_per_utterance_on_a_random_model():
    model = random_model()
    torch.manual_seed(1)
    lens = torch.tensor([6, 11, 3, 11, 0, 8])
    encoder_out = torch.randn(len(lens), int(lens.max()), 8, dtype=torch.float64)
    greedy = greedy_search_batch(model, encoder_out, lens)
    modified = modified_beam_search(model, encoder_out, lens, beam=3)
    for i, length in enumerate(lens.tolist()):
        one = encoder_out[i : i + 1, :length]
        assert greedy[i] == greedy_search(model, one, max_sym_per_frame=1)
        assert modified[i] == modified_beam_search(model, one, torch.tensor([length]), beam=3)[0]
    assert greedy[4] == modified[4] == []
    assert sum(len(h) for h in greedy) > 5  # the random model does emit tokens


def test_searches_continued_chunk_by_chunk_equal_whole_utterance_searches():
    # Streaming: the same frames arrive in chunks of 4, the last utterance ends mid-chunk.
    model = random_model(seed=4)
    torch.manual_seed(5)
    lens = torch.tensor([12, 12, 10])
    encoder_out = torch.randn(3, 12, 8, dtype=torch.float64)
    hyps = [[-1, BLANK] for _ in lens]
    beams = [initial_beam(model) for _ in lens]
    for start in range(0, 12, 4):
        chunk_lens = (lens - start).clamp(0, 4)
        greedy_search_continue(model, encoder_out[:, start : start + 4], chunk_lens, hyps)
        modified_beam_search_continue(model, encoder_out[:, start : start + 4], chunk_lens, beams, beam=3)
    assert [h[2:] for h in hyps] == greedy_search_batch(model, encoder_out, lens)
    assert [best_tokens(model, b) for b in beams] == modified_beam_search(model, encoder_out, lens, beam=3)
    assert sum(len(h) for h in hyps) > 6


def test_modified_beam_search_with_beam_one_is_greedy():
    model = random_model(seed=2)
    torch.manual_seed(3)
    lens = torch.tensor([9, 4, 7])
    encoder_out = torch.randn(3, 9, 8, dtype=torch.float64)
    assert modified_beam_search(model, encoder_out, lens, beam=1) == greedy_search_batch(model, encoder_out, lens)


def exhaustive_best(model, encoder_out) -> list:
    """Sum the probability of every alignment with at most one symbol per frame, per token
    sequence; return the best by log_prob / (len + context_size)."""
    context_size = model.decoder.context_size
    start = (-1,) * (context_size - 1) + (BLANK,)
    enc = model.joiner.encoder_proj(encoder_out[0])
    vocab_size = model.decoder.vocab_size
    totals = {}
    for path in itertools.product(range(vocab_size), repeat=enc.size(0)):
        ys, log_prob = start, 0.0
        for t, token in enumerate(path):
            dec = model.joiner.decoder_proj(model.decoder(torch.tensor([ys[-context_size:]]), need_pad=False))[:, 0]
            log_prob += float(model.joiner(enc[t : t + 1], dec, project_input=False).log_softmax(-1)[0, token])
            if token != BLANK:
                ys = ys + (token,)
        totals[ys] = totals.get(ys, 0.0) + math.exp(log_prob)
    return list(max(totals, key=lambda ys: math.log(totals[ys]) / len(ys))[context_size:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modified_beam_search_with_a_huge_beam_is_exact(seed):
    # With a beam larger than every candidate set nothing is pruned, so the search must return the
    # best sequence of the exhaustive sum over alignments.
    model = random_model(vocab_size=3, seed=seed)
    torch.manual_seed(10 + seed)
    encoder_out = torch.randn(1, 4, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = exhaustive_best(model, encoder_out)
    assert modified_beam_search(model, encoder_out, torch.tensor([4]), beam=1000) == [expected]


def min_greedy_step_prob(model, encoder_out) -> float:
    """The smallest winning probability along the greedy path (one symbol per frame) on (1, T, C)."""
    context_size = model.decoder.context_size
    ys = (-1,) * (context_size - 1) + (BLANK,)
    enc = model.joiner.encoder_proj(encoder_out[0])
    smallest = 1.0
    for t in range(enc.size(0)):
        dec = model.joiner.decoder_proj(model.decoder(torch.tensor([ys[-context_size:]]), need_pad=False))[:, 0]
        probs = model.joiner(enc[t : t + 1], dec, project_input=False).softmax(-1)[0]
        smallest = min(smallest, float(probs.max()))
        if int(probs.argmax()) != BLANK:
            ys = ys + (int(probs.argmax()),)
    return smallest


@torch.no_grad()
def test_greedy_and_beam_searches_agree_on_peaked_input():
    model = random_model(seed=4)
    model.joiner.output_linear.weight.mul_(3000.0)  # near one-hot posteriors
    torch.manual_seed(5)
    lens = torch.tensor([12, 7])
    encoder_out = torch.randn(2, 12, 8, dtype=torch.float64)
    for i, length in enumerate(lens.tolist()):
        assert min_greedy_step_prob(model, encoder_out[i : i + 1, :length]) > 0.99  # easy input
    greedy = greedy_search_batch(model, encoder_out, lens)
    assert modified_beam_search(model, encoder_out, lens, beam=4) == greedy
    assert all(len(hyp) >= 3 for hyp in greedy)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: greedy_search_batch(m, torch.zeros(2, 3), torch.tensor([3, 3])), "must be \\(N, T, C\\)"),
        (lambda m: greedy_search_batch(m, torch.zeros(2, 3, 5), torch.tensor([3])), "encoder_out_lens must be \\(2,\\)"),
        (lambda m: modified_beam_search(m, torch.zeros(1, 3, 5), torch.tensor([4])), "must lie in \\[0, 3\\]"),
        (lambda m: modified_beam_search(m, torch.zeros(1, 3, 5), torch.tensor([3]), beam=0), "beam must be >= 1"),
        (lambda m: greedy_search(m, torch.zeros(2, 3, 5), max_sym_per_frame=1), "must be \\(1, T, C\\)"),
        (lambda m: greedy_search(m, torch.zeros(1, 3, 5), max_sym_per_frame=0), "max_sym_per_frame must be >= 1"),
        (lambda m: beam_search(m, torch.zeros(1, 3, 5), beam=0), "beam must be >= 1"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call(table_model(ECHO_FRAMES, ECHO_LAST))


def test_empty_batch_and_empty_utterance():
    model = table_model(ECHO_FRAMES, ECHO_LAST)
    empty = torch.zeros(0, 0, VOCAB)
    assert greedy_search_batch(model, empty, torch.zeros(0, dtype=torch.int64)) == []
    assert modified_beam_search(model, empty, torch.zeros(0, dtype=torch.int64)) == []
    no_frames = torch.zeros(1, 0, VOCAB)
    assert greedy_search(model, no_frames, max_sym_per_frame=1) == []
    assert beam_search(model, no_frames) == []
