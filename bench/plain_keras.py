"""The pipeline's training job written as a competent plain Keras script.

What the pipeline's Trainer does, without TFX: the same patient-level split
(ingest.assign_splits), the same decoding (models/preprocessing.decode_image), the same
model, augmentation, class weights, two training phases, learning rates, best-epoch keeping
and temperature calibration (models/trainer.py and models/builders.py: the same functions,
so a change of the default recipe reaches both sides), read from the image files with
tf.data; then the model is saved and evaluated on the test split. Missing, because such a
script does not have them: the file checks and quarantine, schema validation, statistics,
sliced evaluation, blessing, Grad-CAM, the model card, lineage and a serving signature that
decodes images.

Run as `python -m bench.plain_keras --data-dir DIR --work-dir DIR ...`; prints one JSON line.
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import bench  # noqa: F401  (before TensorFlow: selects Keras 2)
from imaging import ingest
from models import architectures, features, trainer


def split_records(records: Sequence[ingest.ImageRecord], proportions: Sequence[int]
                  ) -> Dict[str, List[ingest.ImageRecord]]:
    """train/eval/test by patient, exactly as ImageExampleGen assigns them."""
    total = sum(proportions)
    assignment = ingest.assign_splits(
        [(r.patient_id, r.label) for r in records], [p / total for p in proportions])
    return {split: [r for r in records if assignment[r.patient_id] == split]
            for split in features.SPLIT_NAMES}


def _dataset(records: Sequence[ingest.ImageRecord], image_size: int, batch_size: int,
             training: bool, seed: int):
    import tensorflow as tf

    from models.preprocessing import decode_image

    paths = tf.constant([r.path for r in records])
    labels = tf.constant([features.CLASS_NAMES.index(r.label) for r in records], tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    if training:
        dataset = dataset.shuffle(len(records), seed=seed, reshuffle_each_iteration=True).repeat()
    return (dataset
            .map(lambda path, label: (decode_image(tf.io.read_file(path), image_size), label),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def train_and_evaluate(records: Sequence[ingest.ImageRecord], work_dir: str, model_name: str,
                       epochs: int, image_size: int, batch_size: int, split: Sequence[int]
                       ) -> Dict[str, object]:
    import numpy as np
    import tensorflow as tf

    config = trainer.training_config({"model": model_name, "epochs": epochs,
                                      "image_size": image_size, "batch_size": batch_size})
    tf.keras.utils.set_random_seed(config["seed"])
    parts = split_records(records, split)
    counts = np.array([sum(r.label == name for r in parts["train"])
                       for name in features.CLASS_NAMES])
    train = _dataset(parts["train"], image_size, batch_size, True, config["seed"])
    validation = _dataset(parts["eval"], image_size, batch_size, False, config["seed"])
    test = _dataset(parts["test"], image_size, batch_size, False, config["seed"])

    model = trainer.build_model(config)
    trainer.fit_two_phases(model, config, train, validation,
                           math.ceil(len(parts["train"]) / batch_size),
                           class_weight=trainer.class_weights(counts), verbose=2)
    trainer.calibrate(model, validation)
    model.save(os.path.join(work_dir, "model"), save_format="tf", save_traces=False)
    probabilities = model.predict(test, verbose=0)
    truth = np.array([features.CLASS_NAMES.index(r.label) for r in parts["test"]])
    predicted = probabilities.argmax(axis=1)
    return {"images": {split: len(part) for split, part in parts.items()},
            "test_accuracy": float((predicted == truth).mean()),
            "test_predicted_classes": sorted({features.CLASS_NAMES[i] for i in predicted})}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--work-dir", required=True, help="the saved model goes here")
    parser.add_argument("--model", choices=architectures.MODEL_NAMES,
                        default=trainer.DEFAULTS["model"])
    parser.add_argument("--epochs", type=int, default=trainer.DEFAULTS["epochs"])
    parser.add_argument("--image-size", type=int, default=trainer.DEFAULTS["image_size"])
    parser.add_argument("--batch-size", type=int, default=trainer.DEFAULTS["batch_size"])
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
