"""Images per second: ingestion and Transform against raw decoding, and Trainer's input.

Everything reads the outputs of a finished pipeline run (its ExampleGen records and
Transform graph), so the numbers describe the code paths the pipeline really uses.
"""
import csv
import dataclasses
import glob
import math
import os
import tempfile
import time
from typing import Dict, List, Sequence

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


# Images per class in the small ImageExampleGen run whose time is taken as the fixed cost.
EXAMPLE_GEN_SMALL_PER_CLASS = 2


def _write_manifest(records: Sequence, folder: str) -> str:
    """A manifest.csv naming the files by absolute path, so any layout reads the same way."""
    from imaging import ingest
    from models import features

    columns = {"file": "path", "label": "label", **ingest.MANIFEST_OPTIONAL_COLUMNS,
               ingest.MANIFEST_SEX_COLUMN: features.SEX_KEY}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ingest.MANIFEST_NAME), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for record in records:
            row = dataclasses.asdict(record)
            writer.writerow([os.path.abspath(row["path"])] + [row[v] for v in
                                                              list(columns.values())[1:]])
    return folder


def _run_example_gen(data_dir: str, out_dir: str, split_percentages: Sequence[int],
                     beam_args: Sequence[str]) -> float:
    """Seconds of the ImageExampleGen executor, with the Beam arguments `cxr run` gives it."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts, standard_component_specs

    from components.image_example_gen import component, executor

    gen = component.ImageExampleGen(data_dir, split_percentages)
    examples = standard_artifacts.Examples()
    examples.uri = out_dir
    properties = {key: gen.exec_properties[key] for key in (
        standard_component_specs.INPUT_CONFIG_KEY, standard_component_specs.OUTPUT_CONFIG_KEY,
        standard_component_specs.CUSTOM_CONFIG_KEY)}
    properties[standard_component_specs.INPUT_BASE_KEY] = data_dir
    properties[standard_component_specs.OUTPUT_DATA_FORMAT_KEY] = \
        example_gen_pb2.FORMAT_TF_EXAMPLE
    start = time.perf_counter()
    executor.Executor(base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=list(beam_args))).Do(
            {}, {standard_component_specs.EXAMPLES_KEY: [examples]}, properties)
    return time.perf_counter() - start


def example_gen_rates(records: Sequence, split_percentages: Sequence[int],
                      beam_args: Sequence[str], repeats: int) -> Dict[str, object]:
    """ImageExampleGen's fixed cost and its per-image rate, from a small and a full run.

    Both runs go through the executor as the pipeline runs it (checks, deduplication, patient
    split, gzipped TFRecords, in-process Beam). The small run (a few images per class) is the
    fixed cost: Beam start-up, pipeline construction and pickling, the quarantine report.
    The per-image rate is the extra images over the extra time of the full run.
    """
    from models import features

    small = [r for name in features.CLASS_NAMES
             for r in [r for r in records if r.label == name][:EXAMPLE_GEN_SMALL_PER_CLASS]]
    small_seconds, full_seconds = [], []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-examplegen-") as work:
        small_dir = _write_manifest(small, os.path.join(work, "small"))
        full_dir = _write_manifest(records, os.path.join(work, "full"))
        _run_example_gen(small_dir, os.path.join(work, "warm-up"), split_percentages,
                         beam_args)
        for index in range(repeats):
            small_seconds.append(_run_example_gen(
                small_dir, os.path.join(work, f"small-{index}"), split_percentages, beam_args))
            full_seconds.append(_run_example_gen(
                full_dir, os.path.join(work, f"full-{index}"), split_percentages, beam_args))
    extra = len(records) - len(small)
    rates = [extra / max(full - fixed, 1e-9) for full, fixed in zip(full_seconds, small_seconds)]
    return {"images": len(records), "small_run_images": len(small),
            "full_run_seconds": summarize(full_seconds),
            "fixed_seconds": summarize(small_seconds),
            "per_image_rate": summarize(rates)}


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
