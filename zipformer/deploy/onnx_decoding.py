"""onnx_decode.py's machinery: cut sets decoded by exported files with onnxruntime or sherpa-onnx,
scored and written as decode.py writes its results."""
import argparse
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import int_at_least, str2bool
from zipformer.core.logs import setup_logger
from zipformer.core.params import AttributeDict
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.data.domain_names import add_cut_domain_arguments, cut_domain, parse_cut_domains
from zipformer.decoding.scoring import normalize_gigaspeech_results
from zipformer.decoding.session import Result, save_results
from zipformer.deploy.inference import OnnxTransducer, read_tokens, tokens_to_text
from zipformer.deploy.sherpa_online import decode_online, online_recognizer
from zipformer.deploy.streaming_inference import OnnxStreamingTransducer, is_streaming
from zipformer.model.frontend import FRAME_SHIFT

RESULT_KEY = "greedy_search"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--encoder-model-filename", type=Path, required=True, help="encoder-*.onnx")
    parser.add_argument("--decoder-model-filename", type=Path, required=True, help="decoder-*.onnx")
    parser.add_argument("--joiner-model-filename", type=Path, required=True, help="joiner-*.onnx")
    parser.add_argument("--tokens", type=str, default="data/lang_bpe_500/tokens.txt", help="tokens.txt of the model")
    parser.add_argument(
        "--exp-dir",
        type=Path,
        default=None,
        help="Results go to {exp_dir}/greedy_search (default: the encoder's directory).",
    )
    parser.add_argument("--num-threads", type=int_at_least(1), default=2, help="onnxruntime / sherpa-onnx threads")
    parser.add_argument(
        "--runtime",
        choices=("onnxruntime", "sherpa-onnx"),
        default="onnxruntime",
        help="onnxruntime: this recipe's greedy search on precomputed features; sherpa-onnx: the "
        "deployment runtime, computing its own features from the audio.",
    )
    parser.add_argument(
        "--gigaspeech-scoring",
        type=str2bool,
        default=False,
        help="Normalise references and hypotheses as GigaSpeech's scoring does (fillers, tags, hyphens).",
    )
    add_cut_domain_arguments(parser)
    AsrDataModule.add_arguments(parser)
    return parser


def result_suffix(encoder_filename: Path, runtime: str = "onnxruntime") -> str:
    """onnx-epoch-30-avg-9 for encoder-epoch-30-avg-9.onnx (onnx-...int8 for the int8 file)."""
    prefix = "onnx-" if runtime == "onnxruntime" else "sherpa-onnx-"
    return prefix + encoder_filename.name.removesuffix(".onnx").removeprefix("encoder-")


def decode_dataset(
    dl,
    model: Union[OnnxTransducer, OnnxStreamingTransducer],
    tokens: Dict[int, str],
    test_set_name: str,
    domain_of: Optional[Callable[[object], str]] = None,
) -> List[Result]:
    """`domain_of(cut)`: each cut's domain name, for an encoder of several domains."""
    results: List[Result] = []
    audio_seconds = 0.0
    start = time.time()
    for batch_idx, batch in enumerate(dl):
        x = batch["inputs"].numpy()
        x_lens = batch["supervisions"]["num_frames"].numpy()
        if domain_of is None:
            hyps = model.decode_features(x, x_lens)
        else:
            names = [domain_of(cut) for cut in batch["supervisions"]["cut"]]
            hyps = model.decode_features(x, x_lens, model.domain_indices(names, f"test set {test_set_name}"))
        for cut, ref, hyp in zip(batch["supervisions"]["cut"], batch["supervisions"]["text"], hyps):
            results.append((cut.id, ref.split(), tokens_to_text(hyp, tokens).split()))
        audio_seconds += float(x_lens.sum()) * FRAME_SHIFT
        if batch_idx % 20 == 0:
            logging.info(f"[{test_set_name}] batch {batch_idx}, {len(results)} utterances")
    elapsed = time.time() - start
    logging.info(
        f"[{test_set_name}] decoded {len(results)} utterances ({audio_seconds / 3600:.2f} h) in {elapsed:.1f} s, "
        f"real-time factor {elapsed / max(audio_seconds, 1e-9):.4f}"
    )
    return results


def _offline_recognizer(params: AttributeDict):
    import sherpa_onnx

    return sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(params.encoder_model_filename),
        decoder=str(params.decoder_model_filename),
        joiner=str(params.joiner_model_filename),
        tokens=str(params.tokens),
        num_threads=params.num_threads,
        decoding_method="greedy_search",
    )


def _decode_offline(recognizer, waves: List[Tuple[int, np.ndarray]]) -> List[str]:
    streams = []
    for sample_rate, samples in waves:
        stream = recognizer.create_stream()
        stream.accept_waveform(sample_rate, samples)
        streams.append(stream)
    recognizer.decode_streams(streams)
    return [stream.result.text for stream in streams]


def decode_cuts_with_sherpa(
    cuts, params: AttributeDict, test_set_name: str, streaming: bool, batch_size: int = 16
) -> List[Result]:
    """Decode the cuts' audio with sherpa-onnx (greedy search): its online recognizer for a
    streaming export (zipformer.deploy.sherpa_online), its offline one otherwise; `batch_size` streams
    at a time."""
    if streaming:
        recognizer = online_recognizer(
            params.encoder_model_filename, params.decoder_model_filename, params.joiner_model_filename,
            params.tokens, params.num_threads,
        )
    else:
        recognizer = _offline_recognizer(params)
    results: List[Result] = []
    audio_seconds = 0.0
    start = time.time()
    cuts = list(cuts)
    for first in range(0, len(cuts), batch_size):
        batch = cuts[first : first + batch_size]
        waves = [(c.sampling_rate, c.load_audio()[0]) for c in batch]
        texts = decode_online(recognizer, waves) if streaming else _decode_offline(recognizer, waves)
        for c, text in zip(batch, texts):
            results.append((c.id, c.supervisions[0].text.split(), text.split()))
        audio_seconds += sum(c.duration for c in batch)
    elapsed = time.time() - start
    logging.info(
        f"[{test_set_name}] sherpa-onnx decoded {len(results)} utterances ({audio_seconds / 3600:.2f} h) in "
        f"{elapsed:.1f} s, real-time factor {elapsed / max(audio_seconds, 1e-9):.4f}"
    )
    return results


def run(args: argparse.Namespace) -> Dict[str, float]:
    """Decode every test set and write its result files; return {test_set_name: WER %}."""
    params = AttributeDict(vars(args))
    tokens = read_tokens(params.tokens)
    model = OnnxTransducer(
        params.encoder_model_filename, params.decoder_model_filename, params.joiner_model_filename, params.num_threads
    )
    model.check_tokens(tokens, params.tokens)
    if params.cut_domains:
        model.require_domains()
    if model.domains is not None and params.runtime == "sherpa-onnx":
        raise UserError(
            f"{params.encoder_model_filename} has a domain input, which sherpa-onnx lacks: decode it with "
            "--runtime onnxruntime, or give sherpa-onnx the per-domain exports"
        )
    domains = model.domains  # the names of an encoder for several domains; a streaming export has none
    streaming = is_streaming(model)
    if streaming:
        model = OnnxStreamingTransducer(model, params.encoder_model_filename)
    exp_dir = params.exp_dir if params.exp_dir is not None else params.encoder_model_filename.parent
    params.res_dir = Path(exp_dir) / ("streaming" if streaming else "") / RESULT_KEY
    params.res_dir.mkdir(parents=True, exist_ok=True)
    suffix = result_suffix(params.encoder_model_filename, params.runtime)
    setup_logger(params.res_dir / f"log-decode-{suffix}")
    logging.info(f"Decoding with {params.runtime} ({'streaming' if streaming else 'full context'}): {params}")

    data = AsrDataModule(params)
    test_sets = data.load_test_cuts()
    cut_domains = parse_cut_domains(params.cut_domains, list(test_sets))
    wers = {}
    for name, cuts in test_sets.items():
        if params.runtime == "sherpa-onnx":
            results = decode_cuts_with_sherpa(cuts, params, name, streaming)
        else:
            domain_of = (lambda cut, name=name: cut_domain(cut, name, cut_domains)) if domains else None
            results = decode_dataset(data.test_dataloaders(cuts), model, tokens, name, domain_of)
        if params.gigaspeech_scoring:
            results = normalize_gigaspeech_results(results)
        wers[name] = save_results(params, name, results, RESULT_KEY, suffix)
    logging.info("Done!")
    return wers


def main() -> None:
    args = get_parser().parse_args()
    with exit_on_user_error():
        run(args)

