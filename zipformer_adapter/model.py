"""The adapter recipe's model: the base Zipformer transducer with adapters added when enabled."""
from torch import nn

from zipformer.model_args import get_model as get_base_model
from zipformer.utils import AttributeDict
from zipformer_adapter.adapter import add_adapters, log_adapter_summary


def get_model(params: AttributeDict) -> nn.Module:
    model = get_base_model(params)
    if params.use_adapters:
        add_adapters(model, params.adapter_dim, params.get("adapter_init", "zero"))
        log_adapter_summary(model, params.adapter_dim)
    return model
