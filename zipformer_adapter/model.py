"""The adapter recipe's model: the base Zipformer transducer with adapters added when enabled."""
import logging

from torch import nn

from zipformer.model_args import get_model as get_base_model
from zipformer.utils import AttributeDict
from zipformer_adapter.adapter import add_adapters, log_adapter_summary
from zipformer_adapter.flags import ADAPTER_DIM_DEFAULT


def get_model(params: AttributeDict) -> nn.Module:
    model = get_base_model(params)
    if params.use_adapters:
        add_adapters(model, params.adapter_dim, params.get("adapter_init", "zero"))
        log_adapter_summary(model, params.adapter_dim)
    elif params.adapter_dim != ADAPTER_DIM_DEFAULT:
        logging.warning(
            f"--adapter-dim {params.adapter_dim} is ignored: --use-adapters 0 builds the model without adapters "
            "(pass --use-adapters 1 to use them)"
        )
    return model
