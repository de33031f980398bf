"""What a user would write instead of the pipeline: plain Keras, the usual way.

The same model builder, epochs (head and fine-tune phases), learning rates, batch size,
image size and split proportions as the pipeline's Trainer; images read with
`image_dataset_from_directory` from a train/eval/test tree of class folders, then the model
is saved and evaluated on the test split. Deliberately missing, because the usual script
lacks them: schema validation, a patient-level split (files are split at random), class
weights, sliced evaluation, lineage, blessing and a serving signature that decodes images.

Run as `python -m bench.plain_keras --data-dir DIR --work-dir DIR ...`; prints one JSON line.
"""
import argparse
import json
import os
import random
import sys
from typing import Dict, List, Optional, Sequence

import bench  # noqa: F401  (before TensorFlow: selects Keras 2)
from components.image_example_gen import ingest
from models import builders, features, trainer


def write_split_tree(records: Sequence[ingest.ImageRecord], root: str,
                     proportions: Sequence[int], seed: int) -> Dict[str, int]:
    """train/eval/test folders with one folder per class, linking to the image files.

    Files are shuffled with `seed` and cut by the proportions, the way such scripts split.
    """
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    total = sum(proportions)
    train_end = round(len(shuffled) * proportions[0] / total)
    eval_end = train_end + round(len(shuffled) * proportions[1] / total)
    parts = {"train": shuffled[:train_end], "eval": shuffled[train_end:eval_end],
             "test": shuffled[eval_end:]}
    for split, part in parts.items():
        for name in features.CLASS_NAMES:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
        for index, record in enumerate(part):
            link = os.path.join(root, split, record.label,
                                f"{index:05d}_{os.path.basename(record.path)}")
            os.symlink(os.path.abspath(record.path), link)
    return {split: len(part) for split, part in parts.items()}


def _dataset(directory: str, image_size: int, batch_size: int, shuffle: bool, seed: int):
    import tensorflow as tf

    dataset = tf.keras.utils.image_dataset_from_directory(
        directory, labels="inferred", label_mode="int", class_names=features.CLASS_NAMES,
        color_mode="rgb", image_size=(image_size, image_size), batch_size=batch_size,
        shuffle=shuffle, seed=seed)
    return dataset.map(lambda x, y: (x / 255.0, y)).prefetch(tf.data.AUTOTUNE)


def train_and_evaluate(records: Sequence[ingest.ImageRecord], work_dir: str, model_name: str, epochs: int,
                       image_size: int, batch_size: int, split: Sequence[int],
                       seed: int = 0) -> Dict[str, object]:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    counts = write_split_tree(records, os.path.join(work_dir, "splits"), split, seed)
    train, validation, test = (
        _dataset(os.path.join(work_dir, "splits", name), image_size, batch_size,
                 shuffle=name == "train", seed=seed)
        for name in ("train", "eval", "test"))
    model = builders.build(model_name, image_size)
    head_epochs, fine_tune_epochs = trainer.phase_epochs(model_name, epochs)
    model.compile(optimizer=tf.keras.optimizers.Adam(trainer.DEFAULTS["head_learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, validation_data=validation, epochs=head_epochs, verbose=2)
    if fine_tune_epochs:
        builders.set_fine_tuning(model, trainer.DEFAULTS["fine_tune_layers"])
        model.compile(
            optimizer=tf.keras.optimizers.Adam(trainer.DEFAULTS["fine_tune_learning_rate"]),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(train, validation_data=validation, initial_epoch=head_epochs,
                  epochs=head_epochs + fine_tune_epochs, verbose=2)
    model.save(os.path.join(work_dir, "model"), save_format="tf")
    loss, accuracy = model.evaluate(test, verbose=0)
    return {"images": counts, "test_loss": float(loss), "test_accuracy": float(accuracy)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--work-dir", required=True, help="split tree and saved model go here")
    parser.add_argument("--model", choices=features.MODEL_NAMES, default="baseline_cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--split", default="70,15,15", help="train,eval,test percentages")
    args = parser.parse_args(argv)
    try:
        split = [int(v) for v in args.split.split(",")]
        records = ingest.scan(args.data_dir).records
    except (ValueError, ingest.DataError) as error:
        print(f"plain_keras: error: {error}", file=sys.stderr)
        return 2
    result = train_and_evaluate(records, args.work_dir, args.model, args.epochs,
                                args.image_size, args.batch_size, split)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
