"""Turns a folder of chest X-rays into tf.Examples split by patient.

The encoded bytes are stored as they are on disk (no decoding here): Transform decodes
them, so the same code path serves training and serving.
"""
import io
from typing import Any, Dict, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from PIL import Image
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import ingest
from models import features


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _image_size(encoded: bytes) -> Optional[tuple]:
    """(height, width) from the image header, or None if it cannot be read as an image."""
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            width, height = image.size
        return height, width
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def record_to_example(record: ingest.ImageRecord) -> tf.train.Example:
    """One image and its metadata as a tf.Example.

    A file that cannot be read keeps its metadata but lacks the image (or its size), so
    the schema's presence constraints make ExampleValidator report it by feature name.
    """
    feature = {
        features.LABEL_KEY: _bytes_feature(record.label.encode()),
        features.PATIENT_ID_KEY: _bytes_feature(record.patient_id.encode()),
        features.SOURCE_KEY: _bytes_feature(record.source.encode()),
        features.VIEW_KEY: _bytes_feature(record.view.encode()),
        features.AGE_GROUP_KEY: _bytes_feature(record.age_group.encode()),
    }
    if tf.io.gfile.exists(record.path) and not tf.io.gfile.isdir(record.path):
        with tf.io.gfile.GFile(record.path, "rb") as f:
            encoded = f.read()
        feature[features.IMAGE_KEY] = _bytes_feature(encoded)
        size = _image_size(encoded)
        if size:
            feature[features.HEIGHT_KEY] = _int_feature(size[0])
            feature[features.WIDTH_KEY] = _int_feature(size[1])
    return tf.train.Example(features=tf.train.Features(feature=feature))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                     split_pattern: str) -> beam.pvalue.PCollection:
    """Reads every image under input_base; the split pattern only drives fingerprinting."""
    del split_pattern
    records = ingest.scan(exec_properties[standard_component_specs.INPUT_BASE_KEY])
    return (pipeline
            | "ListImages" >> beam.Create(records, reshuffle=True)
            | "ToExample" >> beam.Map(record_to_example))


def _split_key(example: tf.train.Example) -> Tuple[str, str, str]:
    feature = example.features.feature
    return tuple(feature[key].bytes_list.value[0].decode()
                 for key in (features.PATIENT_ID_KEY, features.LABEL_KEY, features.SOURCE_KEY))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """ExampleGen executor that splits by patient instead of by hashing each example.

    The output splits and their proportions come from output_config's hash_buckets; the
    assignment itself is ingest.assign_splits (stratified by class and source), because
    hashing patients alone leaves small data sets with classes missing from a split.
    """

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ImagesToExample

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                               ) -> Dict[str, beam.pvalue.PCollection]:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        splits = output_config.split_config.splits
        names = [split.name for split in splits]
        total = sum(split.hash_buckets for split in splits)
        proportions = [split.hash_buckets / total for split in splits]

        examples = pipeline | "InputToRecord" >> self.GetInputSourceToExamplePTransform()(  # pylint: disable=no-value-for-parameter
            exec_properties, input_config.splits[0].pattern)
        assignment = (examples
                      | "SplitKeys" >> beam.Map(_split_key)
                      | "AllKeys" >> beam.combiners.ToList()
                      | "AssignPatients" >> beam.Map(
                          ingest.assign_splits, proportions, split_names=names))
        partitions = examples | "SplitByPatient" >> beam.Partition(
            lambda example, _, patients: names.index(patients[_split_key(example)[0]]),
            len(names), beam.pvalue.AsSingleton(assignment))
        return dict(zip(names, partitions))
