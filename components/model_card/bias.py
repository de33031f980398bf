"""What the training data itself says about shortcuts: class by source and by age group.

Computed from the examples a model was trained on, so the card's warnings describe that
data, whatever it is, instead of a text written for one data set.
"""
from collections import Counter
from typing import Dict, List, Sequence

from models import features

# An age group whose share of some class is below this, while the class makes up at least
# MIN_OVERALL_SHARE of all images, is reported as (almost) never showing that class.
RARE_SHARE = 0.02
MIN_OVERALL_SHARE = 0.10
# One source providing at least this share of a class is reported.
DOMINANT_SHARE = 0.8
CHECKED_AGE_GROUPS = ("adult", "pediatric")


def crosstab(rows: Sequence[Dict[str, str]], key: str) -> Dict[str, Dict[str, int]]:
    """{value of key: {class: images}} with every class present (0 where none)."""
    counts = Counter((row[key], row[features.LABEL_KEY]) for row in rows)
    return {value: {name: counts[(value, name)] for name in features.CLASS_NAMES}
            for value in sorted({row[key] for row in rows})}


def warnings(rows: Sequence[Dict[str, str]]) -> List[str]:
    """Plain sentences about class/source and class/age confounds in `rows`."""
    found = []
    by_class = Counter(row[features.LABEL_KEY] for row in rows)
    by_age = crosstab(rows, features.AGE_GROUP_KEY)
    for name in features.CLASS_NAMES:
        for age in CHECKED_AGE_GROUPS:
            if by_class[name] and not by_age.get(age, {}).get(name):
                found.append(f"{name}: no {age} image.")
    for age in CHECKED_AGE_GROUPS:
        total = sum(by_age.get(age, {}).values())
        for name in features.CLASS_NAMES:
            count = by_age.get(age, {}).get(name, 0)
            if total and count and count / total < RARE_SHARE \
                    and by_class[name] / len(rows) >= MIN_OVERALL_SHARE:
                found.append(f"{age} images are almost never {name} ({count} of {total}): "
                             f"a model can learn that {age} films are not {name}.")
    for source, per_class in crosstab(rows, features.SOURCE_KEY).items():
        present = [name for name, count in per_class.items() if count]
        if len(present) == 1 and len(by_class) > 1:
            found.append(f"source {source} holds only {present[0]} ({per_class[present[0]]} "
                         f"images): for its films, the source alone gives the answer.")
    for name in features.CLASS_NAMES:
        for source, per_class in crosstab(rows, features.SOURCE_KEY).items():
            if by_class[name] and per_class[name] / by_class[name] >= DOMINANT_SHARE \
                    and by_class[name] >= 10:
                found.append(f"{name}: {per_class[name]} of {by_class[name]} images come from "
                             f"{source}.")
    return found


def data_bias(rows: Sequence[Dict[str, str]]) -> Dict:
    """The card's bias block for the examples in `rows` (metadata dicts of one split)."""
    return {
        "images": len(rows),
        "class_by_source": crosstab(rows, features.SOURCE_KEY),
        "class_by_age_group": crosstab(rows, features.AGE_GROUP_KEY),
        "warnings": warnings(rows),
    }
