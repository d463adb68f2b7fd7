"""Building blocks of the Zipformer: activations, BiasNorm, initialisation helpers and the
parameter-free training regularisers (Balancer, Whiten, ScheduledFloat, dropout variants)."""
import torch
from torch import nn


def ScaledLinear(
    in_features: int, out_features: int, bias: bool = True, initial_scale: float = 1.0
) -> nn.Linear:
    """An nn.Linear whose default init is scaled: weight × s, bias ~ U(-0.1 s, 0.1 s).

    A plain nn.Linear after construction (same state_dict keys); the scale only sets the init,
    which is how Zipformer replaces 1/sqrt(d) factors in the forward pass.
    """
    linear = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.mul_(initial_scale)
        if bias:
            nn.init.uniform_(linear.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return linear
