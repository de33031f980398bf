"""Turns a folder of chest X-rays into tf.Examples split by patient, with a quarantine report.

Every file goes through the one image path (imaging/prepare.py); the encoded bytes are stored
as they are on disk unless TensorFlow would decode them differently, in which case a
corrected 8-bit PNG is stored and the report says so. Transform decodes them, so the same
code path serves training and serving. Files that fail a check, and all but one copy of
identical files, are written to `quarantine.json` inside the examples artifact.
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import code_digest
from components.image_example_gen import ingest, quarantine
from models import features

_QUARANTINED = "quarantined"
# Set by Executor.Do for the Beam graph: where the quarantine report is written.
REPORT_PATH_KEY = "quarantine_report_path"


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def custom_config(options: ingest.IngestOptions,
                  code_sha256: str = "") -> example_gen_pb2.CustomConfig:
    """The ingestion options as the component's custom_config (a Struct packed in Any), with
    the ingestion code's digest: TFX's cache key sees exec properties, not the code."""
    config = example_gen_pb2.CustomConfig()
    values = {**options.to_dict(), code_digest.CODE_SHA256_KEY: code_sha256}
    config.custom_config.Pack(json_format.ParseDict(values, struct_pb2.Struct()))
    return config


def options_from_exec_properties(exec_properties: Dict[str, Any]) -> ingest.IngestOptions:
    text = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not text:
        return ingest.IngestOptions()
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(text, config)
    values = struct_pb2.Struct()
    config.custom_config.Unpack(values)
    options = json_format.MessageToDict(values)
    options.pop(code_digest.CODE_SHA256_KEY, None)
    return ingest.IngestOptions.from_dict(options)


def accepted_to_example(accepted: ingest.Accepted) -> tf.train.Example:
    """One checked image and its metadata as a tf.Example."""
    record, image = accepted.record, accepted.image
    feature = {
        features.IMAGE_KEY: _bytes_feature(image.encoded),
        features.HEIGHT_KEY: _int_feature(image.height),
        features.WIDTH_KEY: _int_feature(image.width),
        features.LABEL_KEY: _bytes_feature(record.label.encode()),
        features.PATIENT_ID_KEY: _bytes_feature(record.patient_id.encode()),
        features.SOURCE_KEY: _bytes_feature(record.source.encode()),
        features.VIEW_KEY: _bytes_feature(record.view.encode()),
        features.AGE_GROUP_KEY: _bytes_feature(record.age_group.encode()),
        features.SEX_KEY: _bytes_feature(record.sex.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _deduplicate_group(keyed):
    """(content hash, files with that content) -> the kept file, then tagged duplicates."""
    kept, duplicates = ingest.deduplicate(keyed[1])
    yield from kept
    for record in duplicates:
        yield beam.pvalue.TaggedOutput(_QUARANTINED, record)


def _write_report(kept: List[Tuple[str, str, Optional[str]]], rejected: List[quarantine.QuarantineRecord],
                  listing: ingest.Listing, options: ingest.IngestOptions, path: str) -> None:
    ingest.make_report(listing, kept, rejected, options).write(path)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                     split_pattern: str) -> beam.pvalue.PCollection:
    """Checks every file under input_base; the split pattern only drives fingerprinting.

    The quarantine report goes to exec_properties[REPORT_PATH_KEY] (set by Executor.Do).
    """
    del split_pattern
    options = options_from_exec_properties(exec_properties)
    scanned = ingest.scan(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                          options.ignore_unknown_labels)
    outcomes = (pipeline
                | "ListFiles" >> beam.Create(scanned.records, reshuffle=True)
                | "Check" >> beam.Map(ingest.inspect_record, options.file_checks))
    accepted = outcomes | "Accepted" >> beam.Filter(lambda o: isinstance(o, ingest.Accepted))
    rejected = outcomes | "Rejected" >> beam.Filter(
        lambda o: isinstance(o, quarantine.QuarantineRecord))
    deduplicated = (accepted
                    | "ByContent" >> beam.Map(lambda a: (a.image.content_sha256, a))
                    | "GroupByContent" >> beam.GroupByKey()
                    | "Deduplicate" >> beam.FlatMap(_deduplicate_group).with_outputs(
                        _QUARANTINED, main="kept"))
    kept = deduplicated.kept
    all_rejected = ((rejected, deduplicated[_QUARANTINED])
                    | "AllRejected" >> beam.Flatten()
                    | "RejectedList" >> beam.combiners.ToList())
    _ = (kept
         | "KeptSummary" >> beam.Map(ingest.kept_summary)
         | "KeptList" >> beam.combiners.ToList()
         | "WriteReport" >> beam.Map(_write_report, beam.pvalue.AsSingleton(all_rejected),
                                     scanned.listing, options,
                                     exec_properties[REPORT_PATH_KEY]))
    return kept | "ToExample" >> beam.Map(accepted_to_example)


def _split_key(example: tf.train.Example) -> Tuple[str, str]:
    feature = example.features.feature
    return tuple(feature[key].bytes_list.value[0].decode()
                 for key in (features.PATIENT_ID_KEY, features.LABEL_KEY))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """ExampleGen executor that splits by patient instead of by hashing each example.

    The output splits and their proportions come from output_config's hash_buckets; the
    assignment itself is ingest.assign_splits: a seeded hash of each patient id, like TFX's
    partition_feature_name, but one that also keeps every class in every split of a small
    data set.
    """

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ImagesToExample

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        """Writes the examples and the quarantine report, then stops if the data is unusable."""
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        report_path = os.path.join(examples.uri, quarantine.REPORT_NAME)
        super().Do(input_dict, output_dict, {**exec_properties, REPORT_PATH_KEY: report_path})
        report = quarantine.load(report_path)
        if report.problems():
            # TFX deletes a failed execution's outputs: keep the report where the user can read
            # it, beside the artifacts (<root>/ImageExampleGen/quarantine/<execution id>/).
            kept_path = os.path.join(os.path.dirname(os.path.dirname(examples.uri)),
                                     "quarantine", os.path.basename(examples.uri),
                                     quarantine.REPORT_NAME)
            report.write(kept_path)
            report.raise_on_problems(kept_path)

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
