"""Export a causal Zipformer transducer as the streaming ONNX files sherpa-onnx's online recognizer
loads, and int8 copies of them.

- encoder-{suffix}-chunk-{C}-left-{L}.onnx, one chunk of C 50 Hz frames after L frames of left context:
    x (N, 2C + 13, 80) float32, then for every layer l (stack by stack) cached_key_l,
    cached_nonlin_attn_l, cached_val1_l, cached_val2_l, cached_conv1_l, cached_conv2_l (float32),
    then embed_states (N, 128, 3, 19) float32 and processed_lens (N,) int64
    -> encoder_out (N, C / 2, joiner_dim) (joiner.encoder_proj applied) and new_<name> of every
    state, in input order. Shapes as zipformer/model/streaming.py; only N is dynamic.
- decoder and joiner: as zipformer/deploy/export.py writes them.

The encoder's metadata is what sherpa-onnx reads to build its states and chunk the features
(model_type, decode_chunk_len = 2C, T = 2C + 13, and per stack num_encoder_layers, encoder_dims,
cnn_module_kernels, left_context_len = L / ds, query_head_dims, value_head_dims, num_heads), plus
the recipe's (e.g. the tuner's settings). After writing, onnxruntime runs a batch of streams
(another batch size than the traced one, streams at different positions) chunk by chunk past the
point where the caches are full, against PyTorch's streaming_forward; a difference fails the export.
"""
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.params import AttributeDict
from zipformer.deploy import export as onnx_export
from zipformer.deploy.export import (
    CHECK_TOLERANCE,
    ExportRecipe,
    check_inputs,
    decoder_joiner_differences,
    export_decoder_and_joiner,
    export_module,
    export_params,
    fail_on_differences,
    load_export_model,
    log_written,
    onnx_file_names,
    quantize_files,
    written_together,
)
from zipformer.deploy.streaming_inference import OnnxStreamingTransducer
from zipformer.model.builder import is_causal_state_dict
from zipformer.model.streaming import (
    EMBED_LOOK_AHEAD,
    STATES_PER_LAYER,
    batch_dim,
    get_init_states,
    stack_states,
    streaming_chunk_config,
    streaming_forward,
)

LAYER_STATE_NAMES = ("cached_key", "cached_nonlin_attn", "cached_val1", "cached_val2", "cached_conv1", "cached_conv2")
BATCH_AXIS = "N"
# The check: streams in one batch (the encoder is traced with 1), and chunks past the first
# L / C (when the attention caches are full) it runs.
CHECK_STREAMS = 2
CHECK_EXTRA_CHUNKS = 3


class OnnxStreamingEncoder(nn.Module):
    """x (N, 2C + 13, 80), *states -> joiner.encoder_proj(encoder output) (N, C / 2, J), *new states.

    Every window is complete (no padding inside a chunk), as sherpa-onnx feeds them.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        processed_lens = states[-1]
        x_lens = torch.full_like(processed_lens, x.shape[1])
        encoder_out, _, new_states = streaming_forward(self.model, x, x_lens, list(states))
        return (self.model.joiner.encoder_proj(encoder_out), *new_states)


def state_names(num_layers: int) -> List[str]:
    """Input names of the states, in the order of zipformer/model/streaming.py's state list."""
    names = [f"{name}_{layer}" for layer in range(num_layers) for name in LAYER_STATE_NAMES]
    return names + ["embed_states", "processed_lens"]


def onnx_init_states(model: nn.Module, batch_size: int) -> List[torch.Tensor]:
    """zipformer/model/streaming.py's zero states with processed_lens as int64 (sherpa-onnx's type)."""
    states = get_init_states(model, batch_size, torch.device("cpu"))
    states[-1] = states[-1].to(torch.int64)
    return states


def streaming_metadata(model: nn.Module, chunk_size: int, left_context: int) -> Dict[str, str]:
    """The encoder metadata sherpa-onnx's online Zipformer2 model reads (one list entry per stack)."""
    encoder = model.encoder

    def per_stack(values) -> str:
        return ",".join(str(v) for v in values)

    return {
        "model_type": "zipformer2",
        "version": "1",
        "model_author": "k2-fsa",
        "comment": "streaming zipformer2",
        "decode_chunk_len": str(2 * chunk_size),
        "T": str(2 * chunk_size + EMBED_LOOK_AHEAD),
        "num_encoder_layers": per_stack(stack.num_layers for stack in encoder.encoders),
        "encoder_dims": per_stack(encoder.encoder_dim),
        "cnn_module_kernels": per_stack(encoder.cnn_module_kernel),
        "left_context_len": per_stack(left_context // ds for ds in encoder.downsampling_factor),
        "query_head_dims": per_stack(encoder.query_head_dim),
        "value_head_dims": per_stack(encoder.value_head_dim),
        "num_heads": per_stack(encoder.num_heads),
    }


def export_streaming_encoder(
    model: nn.Module, filename: Path, chunk_size: int, feature_dim: int, metadata: Dict[str, str]
) -> None:
    states = onnx_init_states(model, 1)
    names = state_names(len(states) // STATES_PER_LAYER)
    dynamic_axes = {"x": {0: BATCH_AXIS}, "encoder_out": {0: BATCH_AXIS}}
    for index, name in enumerate(names):
        axis = batch_dim(index, len(names))
        dynamic_axes[name] = {axis: BATCH_AXIS}
        dynamic_axes[f"new_{name}"] = {axis: BATCH_AXIS}
    x = torch.zeros(1, 2 * chunk_size + EMBED_LOOK_AHEAD, feature_dim, dtype=torch.float32)
    export_module(
        OnnxStreamingEncoder(model),
        (x, *states),
        filename,
        input_names=["x", *names],
        output_names=["encoder_out", *(f"new_{name}" for name in names)],
        dynamic_axes=dynamic_axes,
        metadata=metadata,
    )


@torch.no_grad()
def streaming_differences(model: nn.Module, files: Dict[str, Path], chunk_size: int, left_context: int) -> Dict[str, float]:
    """Max |onnxruntime - PyTorch| of the encoder output and of the new states over CHECK_STREAMS
    streams fed chunk by chunk as one batch (stream i starting i chunks late, so the streams'
    positions and cache fill differ), and of the decoder and joiner."""
    onnx_model = OnnxStreamingTransducer.from_files(files["encoder"], files["decoder"], files["joiner"])
    window = 2 * chunk_size + EMBED_LOOK_AHEAD
    num_chunks = left_context // chunk_size + CHECK_EXTRA_CHUNKS
    feature_dim = onnx_model.model.feature_dim
    rng = np.random.default_rng(0)
    x = rng.normal(-5.0, 3.0, size=(CHECK_STREAMS, num_chunks * 2 * chunk_size + window, feature_dim)).astype(np.float32)
    wrapper = OnnxStreamingEncoder(model).eval()
    # Stream i runs i chunks alone first; then the batch runs with its own positions per stream.
    torch_streams, onnx_streams = [], []
    for i in range(CHECK_STREAMS):
        torch_states, onnx_states = onnx_init_states(model, 1), onnx_model.init_states(1)
        for k in range(i):
            chunk = x[i : i + 1, 2 * chunk_size * k : 2 * chunk_size * k + window]
            torch_states = list(wrapper(torch.from_numpy(chunk), *torch_states)[1:])
            onnx_states = onnx_model.run_chunk(chunk, onnx_states)[1]
        torch_streams.append(torch_states)
        onnx_streams.append(onnx_states)
    torch_states, onnx_states = stack_states(torch_streams), onnx_model.stack(onnx_streams)
    encoder_diff = state_diff = 0.0
    encoder_outs = []
    for k in range(num_chunks - CHECK_STREAMS):
        chunk = np.stack([x[i, 2 * chunk_size * (k + i) :][:window] for i in range(CHECK_STREAMS)])
        torch_out, *torch_states = wrapper(torch.from_numpy(chunk), *torch_states)
        onnx_out, onnx_states = onnx_model.run_chunk(chunk, onnx_states)
        encoder_diff = max(encoder_diff, float(np.abs(onnx_out - torch_out.numpy()).max()))
        for torch_state, onnx_state in zip(torch_states, onnx_states):
            state_diff = max(state_diff, float(np.abs(onnx_state - torch_state.numpy()).max()))
        encoder_outs.append(onnx_out)
    contexts = check_inputs(feature_dim, onnx_model.model.vocab_size, onnx_model.context_size)["y"]
    differences = {"encoder": encoder_diff, "states": state_diff}
    differences.update(decoder_joiner_differences(model, onnx_model.model, contexts, np.concatenate(encoder_outs, 1)))
    return differences


def check_streaming_export(model: nn.Module, files: Dict[str, Path], chunk_size: int, left_context: int) -> Dict[str, float]:
    """Raise RuntimeError unless onnxruntime streams as PyTorch's streaming_forward does."""
    differences = streaming_differences(model, files, chunk_size, left_context)
    logging.info(
        f"onnxruntime vs PyTorch streaming_forward, max abs difference over {CHECK_STREAMS} streams "
        f"chunk by chunk: " + ", ".join(f"{k} {v:.2e}" for k, v in differences.items())
    )
    fail_on_differences(differences, CHECK_TOLERANCE)
    return differences


def int8_streaming_difference(files: Dict[str, Path], int8_files: Dict[str, Path], chunk_size: int, left_context: int) -> float:
    """Max |int8 - fp32| of the encoder output over one random stream (a report, not a check)."""
    num_chunks = left_context // chunk_size + CHECK_EXTRA_CHUNKS
    window = 2 * chunk_size + EMBED_LOOK_AHEAD
    outputs = []
    for paths in (files, int8_files):
        onnx_model = OnnxStreamingTransducer.from_files(paths["encoder"], paths["decoder"], paths["joiner"])
        shape = (1, num_chunks * 2 * chunk_size + window, onnx_model.model.feature_dim)
        x = np.random.default_rng(1).normal(-5.0, 3.0, size=shape)
        states, chunks = onnx_model.init_states(1), []
        for k in range(num_chunks):
            encoder_out, states = onnx_model.run_chunk(x[:, 2 * chunk_size * k :][:, :window], states)
            chunks.append(encoder_out)
        outputs.append(np.concatenate(chunks, axis=1))
    return float(np.abs(outputs[0] - outputs[1]).max())


def check_streamable(params: AttributeDict, state_dict: Dict[str, torch.Tensor]) -> None:
    """UserError unless the checkpoint (its configuration and its weights) is a causal model."""
    if not params.causal or is_causal_state_dict(state_dict) is False:
        raise UserError(
            "the checkpoint is a non-causal model, which cannot stream: export a model trained with "
            "--causal 1, or use export-onnx.py for non-streaming ONNX"
        )


def export(params: AttributeDict, recipe: ExportRecipe, given: frozenset = frozenset()) -> Dict[str, Path]:
    """Write the fp32 and int8 streaming files; return their paths by name (encoder, ..., encoder.int8, ...)."""
    chunk_size, left_context = streaming_chunk_config(params, "the streaming export (one latency per file)")
    model, state_dict = load_export_model(params, recipe, given, check_streamable)
    suffix = f"{recipe.export_suffix(params)}-chunk-{chunk_size}-left-{left_context}"
    files, int8_files = onnx_file_names(Path(params.exp_dir), suffix)
    metadata = {**streaming_metadata(model, chunk_size, left_context), **recipe.onnx_metadata(params, state_dict)}
    logging.info(f"Exporting the streaming encoder {files['encoder'].name} (metadata {metadata}), the decoder and the joiner")
    with written_together(files, int8_files) as (tmp_files, tmp_int8_files):
        export_streaming_encoder(model, tmp_files["encoder"], chunk_size, params.feature_dim, metadata)
        export_decoder_and_joiner(model, tmp_files, params)
        check_streaming_export(model, tmp_files, chunk_size, left_context)
        quantize_files(tmp_files, tmp_int8_files)
        difference = int8_streaming_difference(tmp_files, tmp_int8_files, chunk_size, left_context)
    logging.info(f"int8 vs fp32, max abs difference of the streaming encoder output: {difference:.3g}")
    return log_written(files, int8_files)


# The script: export-onnx.py's flags (--causal 1 and one --chunk-size / --left-context-frames value
# are checked by `export`).
get_parser = onnx_export.get_parser


def main(recipe: ExportRecipe, argv: Optional[List[str]] = None) -> Dict[str, Path]:
    """export-onnx-streaming.py of a recipe; returns the written files by name."""
    params, given = export_params(recipe, argv, "log-export-onnx-streaming")
    with exit_on_user_error():
        written = export(params, recipe, given)
    logging.info("Done!")
    return written
