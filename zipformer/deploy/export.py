"""Export a Zipformer transducer to the three ONNX files sherpa-onnx loads, and int8 copies of them.

- encoder-{suffix}.onnx: encoder_embed, padding mask, Zipformer2, joiner.encoder_proj;
  x (N, T, 80) float32, x_lens (N,) int64 -> encoder_out (N, T', J) float32, encoder_out_lens (N,) int64
- decoder-{suffix}.onnx: decoder (need_pad=False), joiner.decoder_proj;
  y (N, context_size) int64 -> decoder_out (N, J) float32
- joiner-{suffix}.onnx: output_linear(tanh(encoder_out + decoder_out));
  encoder_out (N, J), decoder_out (N, J) -> logit (N, vocab_size)

Opset 13, legacy (TorchScript-tracing) exporter, every length dynamic; metadata as icefall writes it
(sherpa-onnx needs `model_type` on the encoder and `vocab_size`, `context_size` on the decoder).
Negative decoder ids give a zero embedding, as sherpa-onnx starts hypotheses from [-1, ..., -1, 0].
After writing, the files are run with onnxruntime at lengths other than the tracing length, in a
padded batch, and compared with PyTorch: a graph that froze a length fails the export.

`main(recipe)` is the whole export-onnx.py of a recipe; the recipe (an `ExportRecipe`) builds the
model and loads the weights, as for decoding, and its hooks say what the encoder's metadata adds,
how the files are named and how the encoder is traced and checked.
"""
import argparse
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
from torch import nn

from zipformer.checkpoints.averaging import add_checkpoint_arguments, checkpoint_suffix
from zipformer.checkpoints.config import flags_given
from zipformer.checkpoints.loader import DecodingRecipe, ModelLoader
from zipformer.checkpoints.vocabulary import tokens_token_table
from zipformer.core.atomic import remove_stale_temp_files, temp_path, write_atomically
from zipformer.core.errors import exit_on_user_error
from zipformer.core.logs import setup_logger
from zipformer.core.params import AttributeDict
from zipformer.deploy.inference import BLANK_ID, OnnxTransducer, read_tokens
from zipformer.model.flags import add_context_size_argument, add_model_arguments
from zipformer.model.frontend import frontend_params

OPSET_VERSION = 13
# Length of the dummy input the encoder is traced with; the check runs other lengths.
TRACE_FRAMES = 100
# (lengths of a padded batch) used to compare onnxruntime with PyTorch after export.
CHECK_LENGTHS = (163, 117, 58)
CHECK_TOLERANCE = 1e-3

ENCODER_METADATA = {
    "model_type": "zipformer2",
    "version": "1",
    "model_author": "k2-fsa",
    "comment": "non-streaming zipformer2",
}

StateDict = Dict[str, torch.Tensor]


class OnnxEncoder(nn.Module):
    """x (N, T, 80), x_lens (N,) -> joiner.encoder_proj(encoder output) (N, T', joiner_dim), lengths (N,)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        encoder_out, encoder_out_lens = self.model.forward_encoder(x, x_lens)
        return self.model.joiner.encoder_proj(encoder_out), encoder_out_lens


class OnnxDecoder(nn.Module):
    """y (N, context_size) int64, negative = no token -> joiner.decoder_proj(decoder(y)) (N, joiner_dim)."""

    def __init__(self, decoder: nn.Module, decoder_proj: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.decoder_proj = decoder_proj

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.decoder_proj(self.decoder(y, need_pad=False).squeeze(1))


class OnnxJoiner(nn.Module):
    """encoder_out, decoder_out (N, joiner_dim), already projected -> logits (N, vocab_size)."""

    def __init__(self, joiner: nn.Module) -> None:
        super().__init__()
        self.joiner = joiner

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.joiner(encoder_out, decoder_out, project_input=False)


def add_metadata(filename: Path, metadata: Dict[str, str]) -> None:
    """Add string key/value pairs to an ONNX file's metadata_props (in place)."""
    model = onnx.load(str(filename))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = str(value)
    onnx.save(model, str(filename))


def read_metadata(filename: Path) -> Dict[str, str]:
    model = onnx.load(str(filename), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def export_module(
    module: nn.Module,
    args: Tuple[torch.Tensor, ...],
    filename: Path,
    input_names: List[str],
    output_names: List[str],
    dynamic_axes: Dict[str, Dict[int, str]],
    metadata: Dict[str, str],
) -> None:
    """Trace `module` on `args` into `filename` (opset 13) with metadata; atomic."""
    module.eval()
    write_atomically(filename, lambda tmp: _trace(module, args, tmp, input_names, output_names, dynamic_axes, metadata))


def _trace(
    module: nn.Module,
    args: Tuple[torch.Tensor, ...],
    tmp: Path,
    input_names: List[str],
    output_names: List[str],
    dynamic_axes: Dict[str, Dict[int, str]],
    metadata: Dict[str, str],
) -> None:
    with warnings.catch_warnings():
        # Deliberate: the dynamo exporter fails on Zipformer's data-dependent shapes.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        # The traced Python conditions are shape checks on fixed dims; check_export() tests the rest.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(
                module,
                args,
                str(tmp),
                dynamo=False,
                opset_version=OPSET_VERSION,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
            )
    add_metadata(tmp, metadata)


ENCODER_OUTPUTS = ["encoder_out", "encoder_out_lens"]
ENCODER_DYNAMIC_AXES = {
    "x": {0: "N", 1: "T"},
    "x_lens": {0: "N"},
    "encoder_out": {0: "N", 1: "T"},
    "encoder_out_lens": {0: "N"},
}


def encoder_trace_inputs(feature_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """x (1, TRACE_FRAMES, feature_dim) and x_lens (1,): what the encoder is traced with."""
    return torch.zeros(1, TRACE_FRAMES, feature_dim, dtype=torch.float32), torch.tensor([TRACE_FRAMES], dtype=torch.int64)


def export_encoder(model: nn.Module, filename: Path, feature_dim: int, metadata: Dict[str, str]) -> None:
    export_module(
        OnnxEncoder(model),
        encoder_trace_inputs(feature_dim),
        filename,
        input_names=["x", "x_lens"],
        output_names=ENCODER_OUTPUTS,
        dynamic_axes=ENCODER_DYNAMIC_AXES,
        metadata=metadata,
    )


def export_decoder(model: nn.Module, filename: Path, metadata: Dict[str, str]) -> None:
    y = torch.zeros(10, model.decoder.context_size, dtype=torch.int64)
    export_module(
        OnnxDecoder(model.decoder, model.joiner.decoder_proj),
        (y,),
        filename,
        input_names=["y"],
        output_names=["decoder_out"],
        dynamic_axes={"y": {0: "N"}, "decoder_out": {0: "N"}},
        metadata=metadata,
    )


def export_joiner(model: nn.Module, filename: Path, metadata: Dict[str, str]) -> None:
    joiner_dim = model.joiner.output_linear.weight.shape[1]
    encoder_out = torch.rand(11, joiner_dim, dtype=torch.float32)
    decoder_out = torch.rand(11, joiner_dim, dtype=torch.float32)
    export_module(
        OnnxJoiner(model.joiner),
        (encoder_out, decoder_out),
        filename,
        input_names=["encoder_out", "decoder_out"],
        output_names=["logit"],
        dynamic_axes={"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
        metadata=metadata,
    )


class _QuietQuantizer(logging.Filter):
    """onnxruntime's quantizer logs a line per tensor (and generic advice) through our handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = "onnxruntime" in record.pathname and "quantization" in record.pathname
        return not from_quantizer or record.levelno >= logging.ERROR


def quantize_int8(src: Path, dst: Path, op_types: Sequence[str]) -> None:
    """Dynamic int8 quantisation (QInt8 weights) of the given op types; metadata is kept.

    Weights use 7 bits (reduce_range): on x86 CPUs without VNNI (AVX2 only, e.g. AMD EPYC),
    onnxruntime's u8·s8 kernels add pairs of products in int16 and saturate with full-range
    weights; a tiny streaming encoder's int8 output then strayed by 23% of its range, not 10%.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuietQuantizer()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        write_atomically(
            dst,
            lambda tmp: quantize_dynamic(
                model_input=str(src),
                model_output=str(tmp),
                op_types_to_quantize=list(op_types),
                weight_type=QuantType.QInt8,
                reduce_range=True,
            ),
        )
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


# ---------------------------------------------------------------------------------------------
# Checks against PyTorch
# ---------------------------------------------------------------------------------------------


def check_inputs(feature_dim: int, vocab_size: int, context_size: int) -> Dict[str, np.ndarray]:
    """Deterministic inputs that differ from the tracing ones: a padded batch of unequal lengths
    and decoder contexts including sherpa-onnx's initial [-1, ..., -1, 0]."""
    rng = np.random.default_rng(0)
    lengths = np.array(CHECK_LENGTHS, dtype=np.int64)
    x = rng.normal(-5.0, 3.0, size=(len(lengths), int(lengths.max()), feature_dim)).astype(np.float32)
    contexts = rng.integers(0, vocab_size, size=(4, context_size)).astype(np.int64)
    contexts[0] = [-1] * (context_size - 1) + [BLANK_ID]
    return {"x": x, "x_lens": lengths, "y": contexts}


def _joiner_inputs(encoder_out: np.ndarray, decoder_out: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every encoder frame (N·T', J), each paired with the first decoder output row."""
    frames = encoder_out.reshape(-1, encoder_out.shape[-1])
    return frames, np.repeat(decoder_out[:1], frames.shape[0], axis=0)


@torch.no_grad()
def decoder_joiner_differences(
    model: nn.Module, onnx_model: OnnxTransducer, contexts: np.ndarray, encoder_out: np.ndarray
) -> Dict[str, float]:
    """Max |onnxruntime - PyTorch| of the decoder on `contexts` (M, context_size) and of the joiner
    on every frame of `encoder_out` (..., J), each frame paired with the first decoder output."""
    decoder_out = OnnxDecoder(model.decoder, model.joiner.decoder_proj).eval()(torch.from_numpy(contexts))
    onnx_decoder_out = onnx_model.run_decoder(contexts)
    joiner_inputs = _joiner_inputs(encoder_out, decoder_out.numpy())
    logits = OnnxJoiner(model.joiner).eval()(*(torch.from_numpy(a) for a in joiner_inputs))
    onnx_logits = onnx_model.run_joiner(*joiner_inputs)
    return {
        "decoder": float(np.abs(onnx_decoder_out - decoder_out.numpy()).max()),
        "joiner": float(np.abs(onnx_logits - logits.numpy()).max()),
    }


@torch.no_grad()
def max_abs_differences(model: nn.Module, files: Dict[str, Path], feature_dim: int) -> Dict[str, float]:
    """Max |onnxruntime - PyTorch| of each file's outputs on check_inputs()."""
    onnx_model = OnnxTransducer(files["encoder"], files["decoder"], files["joiner"])
    inputs = check_inputs(feature_dim, onnx_model.vocab_size, onnx_model.context_size)
    encoder_out, encoder_out_lens = OnnxEncoder(model).eval()(
        torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["x_lens"])
    )
    onnx_encoder_out, onnx_encoder_out_lens = onnx_model.run_encoder(inputs["x"], inputs["x_lens"])
    same_lengths = np.array_equal(onnx_encoder_out_lens, encoder_out_lens.numpy())
    if onnx_encoder_out.shape != encoder_out.shape or not same_lengths:
        raise RuntimeError(
            f"the exported encoder gives shape {onnx_encoder_out.shape} and lengths {onnx_encoder_out_lens.tolist()}, "
            f"PyTorch {tuple(encoder_out.shape)} and {encoder_out_lens.tolist()}: a length was frozen in the graph"
        )
    differences = {"encoder": float(np.abs(onnx_encoder_out - encoder_out.numpy()).max())}
    differences.update(decoder_joiner_differences(model, onnx_model, inputs["y"], encoder_out.numpy()))
    return differences


def fail_on_differences(differences: Dict[str, float], tolerance: float = CHECK_TOLERANCE) -> None:
    """RuntimeError naming the files whose max abs difference from PyTorch exceeds `tolerance`."""
    bad = {k: v for k, v in differences.items() if not v <= tolerance}
    if bad:
        raise RuntimeError(f"the exported {', '.join(bad)} differ from PyTorch by {bad}: the export is wrong")


def check_export(model: nn.Module, files: Dict[str, Path], feature_dim: int) -> Dict[str, float]:
    """Raise RuntimeError unless onnxruntime reproduces PyTorch on lengths other than the traced one."""
    differences = max_abs_differences(model, files, feature_dim)
    logging.info(
        "onnxruntime vs PyTorch, max abs difference at lengths "
        f"{list(CHECK_LENGTHS)} (padded batch): " + ", ".join(f"{k} {v:.2e}" for k, v in differences.items())
    )
    fail_on_differences(differences)
    return differences


def int8_differences(
    files: Dict[str, Path], int8_files: Dict[str, Path], feature_dim: int, domain: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """Max |int8 - fp32| of the encoder output and of the logits (a report, not a check); `domain`:
    the check utterances' domains for an encoder of several domains."""
    outputs = []
    for paths in (files, int8_files):
        session = OnnxTransducer(paths["encoder"], paths["decoder"], paths["joiner"])
        inputs = check_inputs(feature_dim, session.vocab_size, session.context_size)
        encoder_out, _ = session.run_encoder(inputs["x"], inputs["x_lens"], domain)
        logits = session.run_joiner(*_joiner_inputs(encoder_out, session.run_decoder(inputs["y"])))
        outputs.append((encoder_out, logits))
    return {
        "encoder_out": float(np.abs(outputs[0][0] - outputs[1][0]).max()),
        "logit": float(np.abs(outputs[0][1] - outputs[1][1]).max()),
    }


class ExportRecipe(DecodingRecipe):
    """Hooks of export-onnx.py and export-onnx-streaming.py. The base recipe exports a plain model."""

    # The default of --exp-dir: where the checkpoints are read and the ONNX files written.
    default_exp_dir = "zipformer/exp"

    def onnx_metadata(self, params: AttributeDict, state_dict: StateDict) -> Dict[str, str]:
        """What the encoder's metadata holds beyond the exporter's (e.g. the tuner's settings)."""
        return {}

    def export_suffix(self, params: AttributeDict) -> str:
        """The files' {suffix} (the streaming export appends its chunk configuration)."""
        return checkpoint_suffix(params)

    def write_encoder(self, model: nn.Module, filename: Path, feature_dim: int, metadata: Dict[str, str]) -> None:
        """Trace the non-streaming encoder into `filename`."""
        export_encoder(model, filename, feature_dim, metadata)

    def check_files(self, model: nn.Module, files: Dict[str, Path], feature_dim: int) -> Dict[str, float]:
        """Raise RuntimeError unless onnxruntime reproduces PyTorch with the non-streaming files."""
        return check_export(model, files, feature_dim)

    def int8_report(self, files: Dict[str, Path], int8_files: Dict[str, Path], feature_dim: int) -> Dict[str, float]:
        """Max |int8 - fp32| of the non-streaming files' outputs (a report, not a check)."""
        return int8_differences(files, int8_files, feature_dim)


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------


def add_export_arguments(parser: argparse.ArgumentParser, default_exp_dir: str) -> None:
    group = parser.add_argument_group("Export options")
    add_checkpoint_arguments(group, default_exp_dir, "Export", "Checkpoints are read and ONNX files written here.")
    group.add_argument(
        "--tokens",
        type=str,
        default="data/lang_bpe_500/tokens.txt",
        help="The model's tokens.txt; its size must match the checkpoint's vocabulary.",
    )
    add_context_size_argument(group)


def get_parser(recipe: ExportRecipe) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_export_arguments(parser, recipe.default_exp_dir)
    add_model_arguments(parser)
    recipe.add_arguments(parser)
    return parser


def file_size_mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def load_export_model(
    params: AttributeDict,
    recipe: DecodingRecipe,
    given: frozenset,
    check: Optional[Callable[[AttributeDict, StateDict], None]] = None,
) -> Tuple[nn.Module, StateDict]:
    """The model to export (eval mode) and its state_dict; params gets vocab_size and blank_id
    from --tokens. `check(params, state_dict)` runs once the checkpoint's configuration is in
    params, before the model is built (it raises UserError for a model this export cannot take)."""
    loader = ModelLoader(params, recipe, given, tokens_token_table(read_tokens(params.tokens), params.tokens, BLANK_ID))
    if check is not None:
        check(params, loader.weights.state_dict)
    return loader.build(), loader.weights.state_dict


def onnx_file_names(exp_dir: Path, suffix: str) -> Tuple[Dict[str, Path], Dict[str, Path]]:
    """{name}-{suffix}.onnx and {name}-{suffix}.int8.onnx for the encoder, decoder and joiner."""
    files = {name: exp_dir / f"{name}-{suffix}.onnx" for name in ("encoder", "decoder", "joiner")}
    return files, {name: exp_dir / f"{name}-{suffix}.int8.onnx" for name in files}


def export_decoder_and_joiner(model: nn.Module, files: Dict[str, Path], params: AttributeDict) -> None:
    """The decoder and joiner files, with the metadata sherpa-onnx reads (the same for streaming)."""
    logging.info(f"Exporting the decoder to {files['decoder']}")
    export_decoder(
        model, files["decoder"], {"context_size": str(params.context_size), "vocab_size": str(params.vocab_size)}
    )
    logging.info(f"Exporting the joiner to {files['joiner']}")
    joiner_dim = model.joiner.output_linear.weight.shape[1]
    export_joiner(model, files["joiner"], {"joiner_dim": str(joiner_dim)})


@contextmanager
def written_together(files: Dict[str, Path], int8_files: Dict[str, Path]) -> Iterator[Tuple[Dict[str, Path], Dict[str, Path]]]:
    """Temp paths for the fp32 and int8 files of one export, renamed into place together when the
    block succeeds and all removed when it fails: a failed, wrong (check_export) or killed export
    never leaves a model where a deployment could pick it up, nor fp32 files without int8 twins."""
    final = {**files, **{f"{name}.int8": path for name, path in int8_files.items()}}
    temps = {key: temp_path(path) for key, path in final.items()}
    try:
        yield {name: temps[name] for name in files}, {name: temps[f"{name}.int8"] for name in files}
        for key, path in final.items():
            os.replace(temps[key], path)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def quantize_files(files: Dict[str, Path], int8_files: Dict[str, Path]) -> None:
    """int8 copies (MatMul weights; the decoder's embedding too)."""
    for name, op_types in (("encoder", ["MatMul"]), ("decoder", ["MatMul", "Gather"]), ("joiner", ["MatMul"])):
        quantize_int8(files[name], int8_files[name], op_types)


def log_written(files: Dict[str, Path], int8_files: Dict[str, Path]) -> Dict[str, Path]:
    """Log the sizes; return the fp32 and int8 paths by name (encoder, ..., encoder.int8, ...)."""
    for name, path in files.items():
        logging.info(f"{path}: {file_size_mb(path)}; {int8_files[name].name}: {file_size_mb(int8_files[name])}")
    return {**files, **{f"{name}.int8": path for name, path in int8_files.items()}}


def export(params: AttributeDict, recipe: ExportRecipe, given: frozenset = frozenset()) -> Dict[str, Path]:
    """Write the fp32 and int8 files; return their paths by name (encoder, ..., encoder.int8, ...).

    `given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given).
    """
    model, state_dict = load_export_model(params, recipe, given)
    # The traced graph of a causal model is its full-context forward (Zipformer2.chunk_config):
    # the PyTorch reference it is checked against must be too, whatever --chunk-size says.
    model.encoder.chunk_size, model.encoder.left_context_frames = (-1,), (-1,)
    files, int8_files = onnx_file_names(Path(params.exp_dir), recipe.export_suffix(params))
    metadata = {**ENCODER_METADATA, **recipe.onnx_metadata(params, state_dict)}
    logging.info(f"Exporting {files['encoder'].name} (metadata {metadata}), the decoder and the joiner")
    with written_together(files, int8_files) as (tmp_files, tmp_int8_files):
        recipe.write_encoder(model, tmp_files["encoder"], params.feature_dim, metadata)
        export_decoder_and_joiner(model, tmp_files, params)
        recipe.check_files(model, tmp_files, params.feature_dim)
        quantize_files(tmp_files, tmp_int8_files)
        report = recipe.int8_report(tmp_files, tmp_int8_files, params.feature_dim)
    logging.info("int8 vs fp32, max abs difference: " + ", ".join(f"{k} {v:.3g}" for k, v in report.items()))
    return log_written(files, int8_files)


def export_params(recipe: ExportRecipe, argv: Optional[List[str]], log_name: str) -> Tuple[AttributeDict, frozenset]:
    """The flags of an export script (get_parser(recipe)) as params, and the flags typed; the log
    goes to {exp_dir}/log-export/{log_name}-*, after the partial files of killed exports are removed."""
    parser = get_parser(recipe)
    args = parser.parse_args(argv)
    params = AttributeDict(frontend_params())
    params.update(vars(args))
    params.exp_dir = Path(params.exp_dir)
    if not params.exp_dir.is_dir():
        raise SystemExit(f"error: --exp-dir {params.exp_dir} does not exist: pass the directory with the checkpoints")
    setup_logger(params.exp_dir / "log-export" / log_name)
    for path in remove_stale_temp_files(params.exp_dir):
        logging.warning(f"Removed {path.name}, a partial file left by an export that was killed")
    logging.info(f"Export parameters: {params}")
    return params, flags_given(parser, argv)


def main(recipe: ExportRecipe, argv: Optional[List[str]] = None) -> Dict[str, Path]:
    """export-onnx.py of a recipe; returns the written files by name."""
    params, given = export_params(recipe, argv, "log-export-onnx")
    with exit_on_user_error():
        written = export(params, recipe, given)
    logging.info("Done!")
    return written
