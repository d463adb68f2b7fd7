"""merge.py of a mergeable tuner (LoRA): the tuned weights folded into a plain base checkpoint
({'model': state_dict} with its model_config and vocabulary), which any Zipformer script loads."""
import argparse
from pathlib import Path

from zipformer.checkpoints.averaging import add_checkpoint_arguments
from zipformer.checkpoints.checkpoint import write_checkpoint_file
from zipformer.checkpoints.config import flags_given, model_config
from zipformer.checkpoints.loader import ModelLoader
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import flag_name
from zipformer.core.params import AttributeDict
from zipformer.model.flags import MODEL_CONFIG_KEYS, add_context_size_argument, add_model_arguments
from zipformer.model.frontend import frontend_params
from zipformer.tuners.recipes import TunerDecodingRecipe


def get_merge_parser(recipe: TunerDecodingRecipe) -> argparse.ArgumentParser:
    tuner = recipe.tuner
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("Merge options")
    add_checkpoint_arguments(group, f"zipformer_{tuner.name}/exp", "Merge", "Checkpoints are read here.")
    group.add_argument("--checkpoint", type=str, default=None, help="One file to merge instead of --epoch/--avg.")
    add_context_size_argument(group)
    group.add_argument("--out", type=Path, required=True, help="The merged {'model': state_dict} file.")
    add_model_arguments(parser)
    recipe.add_arguments(parser)
    return parser


def merge_main(recipe: TunerDecodingRecipe) -> None:
    """merge.py of a mergeable tuner: the tuned weights folded into a plain base checkpoint."""
    tuner = recipe.tuner
    parser = get_merge_parser(recipe)
    params = AttributeDict({**frontend_params(), "blank_id": 0, **vars(parser.parse_args())})
    with exit_on_user_error():
        if not params[tuner.switch]:
            raise UserError(f"{flag_name(tuner.switch)} 0 leaves nothing to merge: drop the flag")
        loader = ModelLoader(params, recipe, flags_given(parser), tokens=None)
        weights = loader.weights
        model = loader.build()
        tuner.merge(model)
    merged = {
        "model": model.state_dict(),
        "model_config": model_config(params, MODEL_CONFIG_KEYS),
        "vocabulary": weights.vocabulary,
    }
    write_checkpoint_file(params.out, merged)
    print(f"wrote {params.out}: {len(merged['model'])} tensors, {weights.description} with {tuner.name} merged")
