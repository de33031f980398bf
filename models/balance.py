"""How the training loss weighs examples: by class, or by class and source.

Kept free of TensorFlow so that the CLI can offer the modes without importing it.
"""
import math
from typing import Dict, Tuple

from models import features

CLASS = "class"
CLASS_SOURCE = "class_source"
# "class": each class carries the same total weight. "class_source": the same per class, and
# within a class each source's total grows with the square root of its count, so a source
# that holds most of a class (and could stand in for its label) counts less per image,
# without a one-image source outweighing one of hundreds.
MODES = (CLASS, CLASS_SOURCE)
DEFAULT = CLASS

Group = Tuple[str, str]  # (label, source)


def group_weights(counts: Dict[Group, int], mode: str) -> Dict[Group, float]:
    """Per-example loss weight of each (label, source) group.

    Each class's examples sum to total / number of classes in either mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown balance {mode!r}; choose one of {', '.join(MODES)}")
    class_share = sum(counts.values()) / features.NUM_CLASSES
    weights: Dict[Group, float] = {}
    for label in {label for label, _ in counts}:
        groups = {key: n for key, n in counts.items() if key[0] == label and n}
        shares = {key: (math.sqrt(n) if mode == CLASS_SOURCE else n)
                  for key, n in groups.items()}
        total_share = sum(shares.values())
        weights.update({key: class_share * shares[key] / total_share / n
                        for key, n in groups.items()})
    return weights
