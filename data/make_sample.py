"""Rebuild data/sample/ from the cxr4 development set.

The demo and the tests need real images that ship with the repository, so this takes a
seeded draw of images per class, downsizes them and copies their manifest rows (including
the per-image licence notes). Within a class, at least --min-adult-share of the images are
adult films (where the class has that many), so that no class is told apart by age alone;
adult and other images are each spread over the sources in proportion to their size.
Run from the repository root:

    python data/make_sample.py ../shared/data/cxr4 data/sample --per-class 40
"""
import argparse
import csv
import math
import random
import shutil
from collections import defaultdict
from pathlib import Path

from PIL import Image

MAX_SIDE = 320
JPEG_QUALITY = 90


def _allocate(groups: dict, total: int) -> dict:
    """Share `total` among groups in proportion to their size, at least one each."""
    size = sum(len(rows) for rows in groups.values())
    shares = {key: max(1, round(total * len(rows) / size)) for key, rows in groups.items()}
    largest = max(shares, key=shares.get)
    shares[largest] += total - sum(shares.values())
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--min-adult-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with open(args.source_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_class = defaultdict(lambda: {True: defaultdict(list), False: defaultdict(list)})
    for row in rows:
        by_class[row["label"]][row["age_group"] == "adult"][row["source_repo"]].append(row)

    rng = random.Random(args.seed)
    chosen = []
    for label in sorted(by_class):
        adult, other = by_class[label][True], by_class[label][False]
        adult_count = min(sum(len(r) for r in adult.values()),
                          math.ceil(args.min_adult_share * args.per_class))
        for groups, total in ((adult, adult_count), (other, args.per_class - adult_count)):
            if not total:
                continue
            for source, n in sorted(_allocate(groups, total).items()):
                chosen.extend(rng.sample(sorted(groups[source], key=lambda r: r["file"]), n))

    if args.out_dir.exists():
        shutil.rmtree(args.out_dir)
    (args.out_dir / "images").mkdir(parents=True)
    for row in chosen:
        with Image.open(args.source_dir / row["file"]) as image:
            image = image.convert("L")
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
            image.save(args.out_dir / row["file"], quality=JPEG_QUALITY)
    with open(args.out_dir / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(sorted(chosen, key=lambda r: r["file"]))
    print(f"wrote {len(chosen)} images to {args.out_dir}")


if __name__ == "__main__":
    main()
