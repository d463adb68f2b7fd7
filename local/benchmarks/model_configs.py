"""The model shapes the benchmarks time: icefall's normal model and the small one of the embedded story."""
from typing import Dict, List

# Model-shape flags of each configuration ("normal" is icefall's default model).
CONFIGS: Dict[str, List[str]] = {
    "normal": [],
    "small": [
        "--num-encoder-layers", "1",
        "--feedforward-dim", "256",
        "--encoder-dim", "128",
        "--encoder-unmasked-dim", "128",
        "--num-heads", "4",
        "--decoder-dim", "256",
        "--joiner-dim", "256",
    ],
}
