"""What the training data itself says about shortcuts: class by source and by age group.

Computed from the examples a model was trained on, so the card's warnings describe that
data, whatever it is, instead of a text written for one data set. The input is a count of
examples per (label, source, age group), which the card gathers in one stream over the split.
"""
from collections import Counter
from typing import Dict, List

from models import features

KEYS = (features.LABEL_KEY, features.SOURCE_KEY, features.AGE_GROUP_KEY)
_POSITION = {key: i for i, key in enumerate(KEYS)}

# An age group whose share of some class is below this, while the class makes up at least
# MIN_OVERALL_SHARE of all images, is reported as (almost) never showing that class.
RARE_SHARE = 0.02
MIN_OVERALL_SHARE = 0.10
# One source providing at least this share of a class is reported.
DOMINANT_SHARE = 0.8
CHECKED_AGE_GROUPS = ("adult", "pediatric")


def crosstab(counts: Counter, key: str) -> Dict[str, Dict[str, int]]:
    """{value of key: {class: images}} with every class present (0 where none)."""
    table: Dict[str, Counter] = {}
    for combination, count in counts.items():
        table.setdefault(combination[_POSITION[key]], Counter())[combination[0]] += count
    return {value: {name: table[value][name] for name in features.CLASS_NAMES}
            for value in sorted(table)}


def warnings(counts: Counter) -> List[str]:
    """Plain sentences about class/source and class/age confounds in `counts`."""
    found = []
    by_class = Counter()
    for combination, count in counts.items():
        by_class[combination[0]] += count
    total = sum(by_class.values())
    by_age = crosstab(counts, features.AGE_GROUP_KEY)
    for name in features.CLASS_NAMES:
        for age in CHECKED_AGE_GROUPS:
            if by_class[name] and not by_age.get(age, {}).get(name):
                found.append(f"{name}: no {age} image.")
    for age in CHECKED_AGE_GROUPS:
        age_total = sum(by_age.get(age, {}).values())
        for name in features.CLASS_NAMES:
            count = by_age.get(age, {}).get(name, 0)
            if age_total and count and count / age_total < RARE_SHARE \
                    and by_class[name] / total >= MIN_OVERALL_SHARE:
                found.append(f"{age} images are almost never {name} ({count} of {age_total}): "
                             f"a model can learn that {age} films are not {name}.")
    by_source = crosstab(counts, features.SOURCE_KEY)
    for source, per_class in by_source.items():
        present = [name for name, count in per_class.items() if count]
        if len(present) == 1 and len(by_class) > 1:
            found.append(f"source {source} holds only {present[0]} ({per_class[present[0]]} "
                         f"images): for its films, the source alone gives the answer.")
    for name in features.CLASS_NAMES:
        for source, per_class in by_source.items():
            if by_class[name] and per_class[name] / by_class[name] >= DOMINANT_SHARE \
                    and by_class[name] >= 10:
                found.append(f"{name}: {per_class[name]} of {by_class[name]} images come from "
                             f"{source}.")
    return found


def data_bias(counts: Counter) -> Dict:
    """The card's bias block from examples per (label, source, age group) of one split."""
    return {
        "images": sum(counts.values()),
        "class_by_source": crosstab(counts, features.SOURCE_KEY),
        "class_by_age_group": crosstab(counts, features.AGE_GROUP_KEY),
        "warnings": warnings(counts),
    }
