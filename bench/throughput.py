"""Images per second: ingestion and Transform against raw decoding, and Trainer's input.

Everything reads the outputs of a finished pipeline run (its ExampleGen records and
Transform graph), so the numbers describe the code paths the pipeline really uses.
"""
import glob
import math
import os
import time
from typing import Dict, List

import numpy as np

from bench.measure import summarize


def _split_files(examples_uri: str, split: str = "*") -> List[str]:
    return sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz")))


def _count_records(files: List[str]) -> int:
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(files, compression_type="GZIP").reduce(
        np.int64(0), lambda count, _: count + 1).numpy())


def raw_decode_rates(paths: List[str], image_size: int, repeats: int) -> Dict[str, dict]:
    """Decode and resize every file in a tight single-threaded loop: PIL and tf.image.

    Both produce what Transform produces (grayscale, antialiased resize, float in [0, 1]),
    without its min-max stretch and parsing.
    """
    import tensorflow as tf
    from PIL import Image

    def with_pil(path: str) -> np.ndarray:
        with Image.open(path) as image:
            small = image.convert("L").resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(small, dtype=np.float32) / 255.0

    @tf.function
    def with_tf(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(tf.io.read_file(path), channels=1, dtype=tf.float32,
                                   expand_animations=False)
        return tf.image.resize(image, [image_size, image_size], antialias=True)

    loops = {"pil": with_pil, "tf_image": lambda path: with_tf(tf.constant(path)).numpy()}
    rates = {}
    for name, decode in loops.items():
        decode(paths[0])  # traces the tf.function; warms the page cache
        values = []
        for _ in range(repeats):
            start = time.perf_counter()
            for path in paths:
                decode(path)
            values.append(len(paths) / (time.perf_counter() - start))
        rates[name] = summarize(values)
    return rates


def data_accessor(examples_uri: str):
    """The DataAccessor the Trainer gets, for an ExampleGen output folder."""
    from tfx import v1 as tfx
    from tfx.components.util import examples_utils, tfxio_utils
    from tfx.proto import example_gen_pb2
    from tfx.types import artifact_utils, standard_artifacts

    from models import features

    examples = standard_artifacts.Examples()
    examples.uri = examples_uri
    examples.split_names = artifact_utils.encode_split_names(features.SPLIT_NAMES)
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    return tfx.components.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=None, data_view_decode_fn=None)


def transform_rate(examples_uri: str, transform_graph_uri: str, batch_size: int,
                   repeats: int) -> Dict[str, object]:
    """The Transform graph applied to every example, as Trainer's input_fn applies it."""
    import tensorflow_transform as tft

    from models import trainer

    files = _split_files(examples_uri)
    count = _count_records(files)
    output = tft.TFTransformOutput(transform_graph_uri)
    dataset = trainer.input_fn(files, data_accessor(examples_uri), output, batch_size,
                               training=False)
    values = []
    for _ in range(repeats + 1):  # the first pass traces and warms caches: not counted
        start = time.perf_counter()
        seen = sum(int(images.shape[0]) for images, _ in dataset)
        values.append(seen / (time.perf_counter() - start))
    return {"images": count, "images_per_second": summarize(values[1:])}


def training_input_rates(examples_uri: str, transform_graph_uri: str, model_name: str,
                         image_size: int, batch_size: int, repeats: int) -> Dict[str, object]:
    """One epoch of training steps fed by Trainer's input_fn vs by tensors in memory.

    Also the input pipeline alone. The ratio fed/in-memory says whether the input pipeline
    holds the model back; on a shared CPU both compete for the same cores.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import builders, trainer

    files = _split_files(examples_uri, "train")
    steps = max(1, math.ceil(_count_records(files) / batch_size))
    output = tft.TFTransformOutput(transform_graph_uri)
    fed = trainer.input_fn(files, data_accessor(examples_uri), output, batch_size,
                           training=True)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in fed.take(steps)])
    in_memory = tf.data.Dataset.from_tensor_slices(
        (np.concatenate(images), np.concatenate(labels))).batch(batch_size).repeat()

    model = builders.build(model_name, image_size)
    model.compile(optimizer=tf.keras.optimizers.Adam(trainer.DEFAULTS["head_learning_rate"]),
                  loss="sparse_categorical_crossentropy")
    for dataset in (in_memory, fed):  # traces the train step for each input
        model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)

    def images_per_second(run) -> float:
        start = time.perf_counter()
        run()
        return steps * batch_size / (time.perf_counter() - start)

    input_only, fed_rates, memory_rates = [], [], []
    for _ in range(repeats):
        input_only.append(images_per_second(lambda: [None for _ in fed.take(steps)]))
        memory_rates.append(images_per_second(
            lambda: model.fit(in_memory, steps_per_epoch=steps, epochs=1, verbose=0)))
        fed_rates.append(images_per_second(
            lambda: model.fit(fed, steps_per_epoch=steps, epochs=1, verbose=0)))
    ratios = [f / m for f, m in zip(fed_rates, memory_rates)]
    return {"steps": steps, "batch_size": batch_size,
            "input_pipeline_alone": summarize(input_only),
            "training_in_memory": summarize(memory_rates),
            "training_fed_by_input_fn": summarize(fed_rates),
            "ratio_fed_to_in_memory": summarize(ratios)}
