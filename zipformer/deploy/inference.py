"""Running exported transducers without PyTorch: tokens.txt, fbank features and batched greedy
search with onnxruntime, as sherpa-onnx runs the same three files.

The files follow the contract of zipformer/deploy/export.py: the encoder already applies the joiner's
encoder projection and the decoder its decoder projection, so the joiner only adds, tanh and
projects to the vocabulary.
"""
import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import kaldi_native_fbank as knf
import numpy as np
import onnxruntime as ort
import soundfile as sf

from zipformer.core.errors import UserError
from zipformer.data.domain_names import DOMAINS_METADATA, domain_index
from zipformer.model.frontend import FEATURE_DIM, LOG_EPS, SAMPLE_RATE

PathLike = Union[str, Path]

# sherpa-onnx hard-codes the blank id.
BLANK_ID = 0
BLANK_SYMBOL = "<blk>"
WORD_START = "\u2581"  # sentencepiece's "▁"
# The encoder's convolutions need this many frames (zipformer/model/subsampling.py MIN_INPUT_FRAMES);
# kept here so that this module needs no PyTorch import of its own.
MIN_INPUT_FRAMES = 9


def add_file_arguments(parser: argparse.ArgumentParser, pattern: str = "*") -> None:
    """--{encoder,decoder,joiner}-model-filename and --tokens of a script that decodes exported files;
    `pattern` shows the file names in the help (e.g. "*-chunk-*")."""
    for name in ("encoder", "decoder", "joiner"):
        parser.add_argument(f"--{name}-model-filename", type=str, required=True, help=f"{name}-{pattern}.onnx")
    parser.add_argument("--tokens", type=str, required=True, help="tokens.txt of the model")


def read_tokens(filename: PathLike) -> Dict[int, str]:
    """tokens.txt (`symbol id` per line) -> {id: symbol}, without `#n` disambiguation symbols.

    A line holding only an id is a space symbol, as in sherpa-onnx. Raises UserError unless the
    ids are exactly 0..V-1 and blank (`<blk>`, if present) is 0.
    """
    path = Path(filename)
    if not path.is_file():
        raise UserError(
            f"tokens file {path} not found: pass --tokens data/lang_bpe_500/tokens.txt (written by prepare.sh)"
        )
    table: Dict[int, str] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        symbol, _, token_id = line.rpartition(" ")
        if not token_id.isdigit():
            raise UserError(f"{path}:{line_number}: expected 'symbol id', got {line!r}")
        if symbol.startswith("#") and symbol[1:].isdigit():
            continue
        if int(token_id) in table:
            raise UserError(f"{path}:{line_number}: id {token_id} appears twice")
        table[int(token_id)] = symbol or " "
    if not table or sorted(table) != list(range(len(table))):
        raise UserError(f"{path}: token ids must be 0..N-1 without gaps; is it a tokens.txt from prepare.sh?")
    blank_ids = [i for i, s in table.items() if s == BLANK_SYMBOL]
    if blank_ids and blank_ids != [BLANK_ID]:
        raise UserError(f"{path}: {BLANK_SYMBOL} has id {blank_ids[0]}, but sherpa-onnx needs blank at id {BLANK_ID}")
    return table


def tokens_to_text(token_ids: Sequence[int], table: Dict[int, str]) -> str:
    """Concatenate the symbols; a leading "▁" starts a word."""
    return "".join(table[i] for i in token_ids).replace(WORD_START, " ").strip()


def fbank_options(sample_rate: int = SAMPLE_RATE) -> knf.FbankOptions:
    """The training features (lhotse Fbank), which are also what sherpa-onnx computes."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.mel_opts.num_bins = FEATURE_DIM
    opts.mel_opts.high_freq = -400
    return opts


def compute_fbank(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """samples: (S,) float in [-1, 1] -> (T, 80) float32 log-mel fbank, T = round(S / 160)."""
    fbank = knf.OnlineFbank(fbank_options(sample_rate))
    fbank.accept_waveform(sample_rate, np.ascontiguousarray(samples, dtype=np.float32))
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).astype(np.float32)


def pad_features(features: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """N arrays (T_i, C) -> (N, max T_i, C) float32 padded with LOG_EPS, and (N,) int64 lengths."""
    lengths = np.array([f.shape[0] for f in features], dtype=np.int64)
    batch = np.full((len(features), int(lengths.max()), features[0].shape[1]), LOG_EPS, dtype=np.float32)
    for i, f in enumerate(features):
        batch[i, : f.shape[0]] = f
    return batch, lengths


def read_wave(filename: PathLike, expected_sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first channel of a sound file as float32 in [-1, 1]."""
    path = Path(filename)
    if not path.is_file():
        raise UserError(f"sound file {path} not found")
    samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    if sample_rate != expected_sample_rate:
        raise UserError(
            f"{path} is sampled at {sample_rate} Hz, the model expects {expected_sample_rate} Hz: "
            f"resample it, e.g. sox {path} -r {expected_sample_rate} out.wav"
        )
    return samples[:, 0]


def _session(filename: PathLike, num_threads: int) -> ort.InferenceSession:
    path = Path(filename)
    if not path.is_file():
        raise UserError(f"ONNX model {path} not found: run export-onnx.py first, or check the file name")
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = num_threads
    # Every padded batch has its own shape. The CPU arena would keep the largest batch's memory
    # for the session's lifetime, and memory patterns plan (and hold) a block per input shape:
    # without both, what a batch allocates is freed after it, as in PyTorch decoding.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except (ort.capi.onnxruntime_pybind11_state.InvalidProtobuf, ort.capi.onnxruntime_pybind11_state.Fail) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise UserError(
            f"ONNX model {path} ({path.stat().st_size} bytes) cannot be loaded, it is truncated or not an ONNX "
            f"file ({reason}): export it again with export-onnx.py"
        ) from None


def _int_metadata(session: ort.InferenceSession, key: str, filename: PathLike) -> int:
    value = session.get_modelmeta().custom_metadata_map.get(key)
    if value is None or not value.isdigit():
        raise UserError(f"{filename} has no metadata '{key}': export it with export-onnx.py")
    return int(value)


class OnnxTransducer:
    """The three exported files in onnxruntime sessions, and greedy search over them.

    An encoder of several domains (export-onnx.py --tuners) has a third input, `domain` (N,) int64,
    and lists its domains in its metadata; `domains` is then their names (else None).
    """

    def __init__(self, encoder: PathLike, decoder: PathLike, joiner: PathLike, num_threads: int = 1) -> None:
        self.encoder_filename = encoder
        self.encoder = _session(encoder, num_threads)
        self.decoder = _session(decoder, num_threads)
        self.joiner = _session(joiner, num_threads)
        self.context_size = _int_metadata(self.decoder, "context_size", decoder)
        self.vocab_size = _int_metadata(self.decoder, "vocab_size", decoder)
        self.joiner_dim = _int_metadata(self.joiner, "joiner_dim", joiner)
        self.feature_dim = self.encoder.get_inputs()[0].shape[2]
        self.domains: Optional[List[str]] = None
        if "domain" in [i.name for i in self.encoder.get_inputs()]:
            self.domains = self.encoder.get_modelmeta().custom_metadata_map[DOMAINS_METADATA].split(",")
        dims = {"encoder": self.encoder.get_outputs()[0].shape[2], "decoder": self.decoder.get_outputs()[0].shape[1]}
        if any(dim != self.joiner_dim for dim in dims.values()):
            raise UserError(
                f"output dims {dims} do not match the joiner's joiner_dim {self.joiner_dim}: "
                "pass the encoder, decoder and joiner of one export"
            )

    def check_tokens(self, tokens: Dict[int, str], filename: PathLike) -> None:
        if len(tokens) != self.vocab_size:
            raise UserError(
                f"{filename} has {len(tokens)} tokens but the decoder was exported with vocab_size "
                f"{self.vocab_size}: pass the tokens.txt of the model"
            )

    def require_domains(self) -> List[str]:
        """The encoder's domain names; UserError for an encoder without the domain input."""
        if self.domains is None:
            raise UserError(
                f"{self.encoder_filename} has no domain input (one model, one domain): drop the domain flags, "
                "or export one encoder for every domain with export-onnx.py --tuners"
            )
        return self.domains

    def domain_indices(self, names: Sequence[str], source: str) -> np.ndarray:
        """(N,) int64 indices of per-utterance domain names (-1 = base) for run_encoder."""
        domains = self.require_domains()
        return np.array([domain_index(name, domains, source) for name in names], dtype=np.int64)

    def run_encoder(
        self, x: np.ndarray, x_lens: np.ndarray, domain: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """x: (N, T, 80) float32, x_lens: (N,), for an encoder of several domains domain (N,) int64
        (domain_indices) -> (N, T', joiner_dim) and (N,) int64."""
        inputs = self.encoder.get_inputs()
        feed = {inputs[0].name: np.asarray(x, dtype=np.float32), inputs[1].name: np.asarray(x_lens, dtype=np.int64)}
        if self.domains is not None:
            if domain is None:
                raise UserError(
                    f"{self.encoder_filename} serves the domains {', '.join(self.domains)}: give each utterance's "
                    "domain (--domain/--domains, --cut-domains; 'base' = no tuner)"
                )
            feed["domain"] = domain.astype(np.int64)
        elif domain is not None:
            self.require_domains()
        encoder_out, encoder_out_lens = self.encoder.run(None, feed)
        return encoder_out, encoder_out_lens

    def run_decoder(self, contexts: np.ndarray) -> np.ndarray:
        """contexts: (N, context_size) token ids, -1 for "no token" -> (N, joiner_dim)."""
        name = self.decoder.get_inputs()[0].name
        return self.decoder.run(None, {name: contexts.astype(np.int64)})[0]

    def run_joiner(self, encoder_out: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
        """(N, joiner_dim) each -> (N, vocab_size) logits."""
        names = [i.name for i in self.joiner.get_inputs()]
        return self.joiner.run(None, {names[0]: encoder_out, names[1]: decoder_out})[0]

    def initial_hyps(self, batch_size: int) -> Tuple[List[List[int]], np.ndarray]:
        """Hypotheses before their first frame, the context [-1, ..., -1, blank] (sherpa-onnx's and
        the PyTorch search's), and their decoder output (N, joiner_dim)."""
        hyps = [[-1] * (self.context_size - 1) + [BLANK_ID] for _ in range(batch_size)]
        return hyps, self.run_decoder(np.array(hyps, dtype=np.int64))

    def greedy_step(self, frames: np.ndarray, hyps: List[List[int]], decoder_out: np.ndarray) -> None:
        """One encoder frame per hypothesis, frames (M, joiner_dim) for hyps[:M]: append each
        non-blank argmax and re-run the decoder for those hypotheses only (in place)."""
        tokens = self.run_joiner(frames, decoder_out[: frames.shape[0]]).argmax(axis=-1)
        emitted = np.flatnonzero(tokens != BLANK_ID)
        if emitted.size:
            for i in emitted:
                hyps[i].append(int(tokens[i]))
            contexts = np.array([hyps[i][-self.context_size :] for i in emitted], dtype=np.int64)
            decoder_out[emitted] = self.run_decoder(contexts)

    def greedy_search(self, encoder_out: np.ndarray, encoder_out_lens: np.ndarray) -> List[List[int]]:
        """One symbol per frame over a padded batch, like the PyTorch greedy_search_batch.

        Each utterance starts from initial_hyps(); the decoder is re-run only for the utterances
        that emitted a symbol. Returns N lists of token ids, in the batch's order.
        """
        lengths = np.asarray(encoder_out_lens, dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")  # longest first: active rows are a prefix
        sorted_lengths = lengths[order]
        encoder_out = encoder_out[order]
        hyps, decoder_out = self.initial_hyps(len(order))
        for t in range(int(sorted_lengths.max(initial=0))):
            num_active = int((sorted_lengths > t).sum())
            self.greedy_step(encoder_out[:num_active, t], hyps, decoder_out)
        results: List[List[int]] = [[] for _ in order]
        for position, index in enumerate(order):
            results[index] = hyps[position][self.context_size :]
        return results

    def decode_features(self, x: np.ndarray, x_lens: np.ndarray, domain: Optional[np.ndarray] = None) -> List[List[int]]:
        """Padded fbank (N, T, 80) and lengths (and domain indices, see run_encoder) -> N token-id lists."""
        if x.ndim != 3 or x.shape[2] != self.feature_dim:
            raise ValueError(f"expected features (N, T, {self.feature_dim}), got shape {x.shape}")
        if int(x_lens.min()) < MIN_INPUT_FRAMES:
            raise UserError(
                f"an utterance has {int(x_lens.min())} feature frames, the model needs at least "
                f"{MIN_INPUT_FRAMES} (0.09 s of audio): drop or pad it"
            )
        encoder_out, encoder_out_lens = self.run_encoder(x, x_lens, domain)
        return self.greedy_search(encoder_out, encoder_out_lens)
