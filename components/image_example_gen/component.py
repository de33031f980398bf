"""ImageExampleGen: FileBasedExampleGen for image folders, with a patient-level split."""
import hashlib
import os
from typing import Iterable, Optional, Sequence

import tensorflow as tf
from tfx.components.example_gen import driver, input_processor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2

from components import code_digest
from components.image_example_gen import executor
from imaging import ingest
from models import features


def fingerprint_tree(root: str) -> str:
    """Order-independent fingerprint of every file under root (relative path, size, mtime).

    TFX's own fingerprint only sees files matching one glob level, which would miss an
    image replaced inside a class folder and reuse a stale cached ExampleGen output.
    """
    entries = []
    for directory, _, files in tf.io.gfile.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            stat = tf.io.gfile.stat(path)
            seconds = stat.mtime_nsec // 10**9
            entries.append(f"{os.path.relpath(path, root)}:{stat.length}:{seconds}")
    digest = hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()
    return f"files:{len(entries)},sha256:{digest}"


def check_split_percentages(split_percentages: Sequence[int]) -> None:
    if len(split_percentages) != len(features.SPLIT_NAMES) or min(split_percentages) <= 0:
        raise ValueError(
            f"split percentages need {len(features.SPLIT_NAMES)} positive integers "
            f"({'/'.join(features.SPLIT_NAMES)}), got {list(split_percentages)}")


class _TreeInputProcessor(input_processor.FileBasedInputProcessor):
    def __init__(self, input_base_uri: str, splits: Iterable[example_gen_pb2.Input.Split],
                 range_config: Optional[range_config_pb2.RangeConfig] = None):
        super().__init__(input_base_uri, splits, range_config)
        self._root = input_base_uri

    def get_input_fingerprint(self, span: int, version: Optional[int]) -> str:
        return fingerprint_tree(self._root)


class _TreeDriver(driver.FileBasedDriver):
    def get_input_processor(self, splits, range_config=None, input_base_uri=None):
        return _TreeInputProcessor(input_base_uri, splits, range_config)


class ImageExampleGen(FileBasedExampleGen):
    """Reads a folder per class or a manifest.csv folder; see ingest.py for both layouts.

    options (file checks, quarantine limit, unknown labels) reach the executor through
    custom_config with the ingestion code's digest, so changing either invalidates the cached
    output.
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = _TreeDriver

    def __init__(self, data_dir: str, split_percentages: Sequence[int] = (70, 15, 15),
                 options: ingest.IngestOptions = ingest.IngestOptions()):
        check_split_percentages(split_percentages)
        output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=int(share))
                    for name, share in zip(features.SPLIT_NAMES, split_percentages)],
            partition_feature_name=features.PATIENT_ID_KEY))
        super().__init__(
            input_base=data_dir,
            input_config=example_gen_pb2.Input(
                splits=[example_gen_pb2.Input.Split(name="all", pattern="*")]),
            output_config=output_config,
            custom_config=executor.custom_config(
                options, code_digest.component_sha256("image_example_gen")))
