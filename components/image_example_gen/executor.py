"""Turns a folder of chest X-rays into tf.Examples split by patient, with a quarantine report.

Every file goes through the one image path (imaging/prepare.py); the encoded bytes are stored
as they are on disk unless TensorFlow would decode them differently, in which case a
corrected 8-bit PNG is stored and the report says so. Transform decodes them, so the same
code path serves training and serving. Files that fail a check, and all but one copy of
identical files, are written to `quarantine.json` inside the examples artifact.

No step holds the images: the checks pass on what the split and the report need, and each
kept file is read again, hash-checked and serialized in the stage that writes it (Beam's
in-process runner keeps whole collections in memory between stages). What does cross the
stages per file is a plain tuple (_Row), and the steps that see every file at once keep a
count per class (the report) or one entry per patient (the split), not one per file.
"""
import dataclasses
import gzip
import os
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import filebasedsink, tfrecordio
from apache_beam.io.filesystem import CompressionTypes
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor, write_split
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import code_digest
from imaging import ingest, quarantine
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


def _custom_values(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    text = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not text:
        return {}
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(text, config)
    values = struct_pb2.Struct()
    config.custom_config.Unpack(values)
    return json_format.MessageToDict(values)


def options_from_exec_properties(exec_properties: Dict[str, Any]) -> ingest.IngestOptions:
    options = _custom_values(exec_properties)
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


# One file as it crosses Beam's stages: (content hash, height, width, conversion, then the
# ingest.ImageRecord fields in order). Beam encodes a tuple of strings and ints field by field;
# a dataclass it pickles whole, class and field names included (351 bytes against 147 for a
# typical file, executor_test.py), and decodes into objects with their own attribute dicts.
# Every collection and list that holds the files holds one of these per file.
_Row = Tuple[Any, ...]
_RECORD_START = 4


def _row(checked: ingest.CheckedFile) -> _Row:
    return (checked.content_sha256, checked.height, checked.width, checked.conversion,
            *dataclasses.astuple(checked.record))


def _checked(row: _Row) -> ingest.CheckedFile:
    return ingest.CheckedFile(ingest.ImageRecord(*row[_RECORD_START:]), row[0], row[1], row[2],
                              row[3])


def _patient_label(row: _Row) -> Tuple[str, str]:
    record = ingest.ImageRecord(*row[_RECORD_START:])
    return record.patient_id, record.label


def _deduplicate_group(keyed):
    """(content hash, files with that content) -> the kept file, then tagged duplicates."""
    kept, duplicates = ingest.deduplicate(map(_checked, keyed[1]))
    yield from map(_row, kept)
    for record in duplicates:
        yield beam.pvalue.TaggedOutput(_QUARANTINED, record)


class _TallyKept(beam.CombineFn):
    """The report's ingest.KeptTally, counted as the kept files pass."""

    def create_accumulator(self) -> ingest.KeptTally:
        return ingest.KeptTally()

    def add_input(self, tally: ingest.KeptTally, row: _Row) -> ingest.KeptTally:
        record = ingest.ImageRecord(*row[_RECORD_START:])
        return tally.add(record.label, record.path, row[3])

    def merge_accumulators(self, tallies: Iterable[ingest.KeptTally]) -> ingest.KeptTally:
        merged = ingest.KeptTally()
        for tally in tallies:
            merged.merge(tally)
        return merged

    def extract_output(self, tally: ingest.KeptTally) -> ingest.KeptTally:
        return tally


def _write_report(kept: ingest.KeptTally, rejected: List[quarantine.QuarantineRecord],
                  listing: ingest.Listing, options: ingest.IngestOptions, path: str) -> None:
    ingest.make_report(listing, kept, rejected, options).write(path)


def _check(record: Tuple[str, ...], options):
    """Checks one file (the ImageRecord's fields): (content hash, _Row without the bytes) if
    accepted, else its quarantine record on the _QUARANTINED output."""
    outcome = ingest.inspect_record(ingest.ImageRecord(*record), options)
    if isinstance(outcome, ingest.Accepted):
        yield outcome.content_sha256, _row(ingest.without_bytes(outcome))
    else:
        yield beam.pvalue.TaggedOutput(_QUARANTINED, outcome)


def _serialized_example(row: _Row, options) -> bytes:
    return accepted_to_example(ingest.reload(_checked(row), options)).SerializeToString()


def _split_configs(exec_properties: Dict[str, Any]
                   ) -> Tuple[example_gen_pb2.Input, example_gen_pb2.Output]:
    """The component's input and output (split) configs, from their JSON exec properties."""
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
    return input_config, output_config

class _GzipWriter:
    """A file handle that gzips what is written at deflate level 0 (stored blocks)."""

    def __init__(self, raw):
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0)

    def write(self, data: bytes) -> None:
        self._gzip.write(data)

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()


class _StoredGzipTFRecordSink(filebasedsink.FileBasedSink):
    """The gzipped TFRecords every TFX component reads, written without compressing.

    The payload is JPEG or PNG, already compressed: zlib's default level saved 0.06 % of the
    bytes and took 0.8 ms per image, about as long as the image's decode check. Stored
    deflate blocks keep the .gz format (any gzip reader, TFX's included, reads them).
    """

    def __init__(self, file_path_prefix: str):
        super().__init__(file_path_prefix, coder=coders.BytesCoder(), file_name_suffix=".gz",
                         num_shards=0, shard_name_template=None,
                         mime_type="application/octet-stream",
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def open(self, temp_path: str) -> _GzipWriter:
        return _GzipWriter(super().open(temp_path))

    def write_encoded_record(self, file_handle, value: bytes) -> None:
        # Beam's own TFRecord framing (length, masked CRC32C): the format every reader expects.
        tfrecordio._TFRecordUtil.write_record(file_handle, value)  # pylint: disable=W0212


def _in_content_order(kept: List[_Row]) -> List[_Row]:
    """Kept files in the order of their content hash: shuffled, yet the same on every run.

    TFX's own writer reshuffles every example (a GroupByKey holding all of them); the order
    is settled here instead, on rows without bytes.
    """
    return sorted(kept, key=lambda row: row[0])


@beam.ptransform_fn
def _AssignPatients(kept: beam.pvalue.PCollection, proportions: Sequence[float],
                    names: Sequence[str]) -> beam.pvalue.PCollection:
    """Patient id -> split name (ingest.assign_splits) as one element, from each distinct
    (patient, label) pair: the step holds one entry per patient, not one per file."""
    return (kept
            | "SplitKeys" >> beam.Map(_patient_label)
            | "DistinctKeys" >> beam.Distinct()
            | "AllKeys" >> beam.combiners.ToList()
            | "Assign" >> beam.Map(lambda keys: ingest.assign_splits(
                sorted(keys), proportions, split_names=names)))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                     split_pattern: str) -> beam.pvalue.PCollection:
    """Checks every file under input_base; the split pattern only drives fingerprinting.

    Two passes over the files, so that no step holds the images: the checks keep what the
    split and the report need (a _Row per file), and each kept file is read again just
    before it is written. The quarantine report goes to exec_properties[REPORT_PATH_KEY]
    (set by Executor.Do). Returns the kept files as _Row, in content-hash
    order; GenerateExamplesByBeam splits them and turns each into its example.
    """
    del split_pattern
    options = options_from_exec_properties(exec_properties)
    scanned = ingest.scan(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                          options.ignore_unknown_labels)
    checked = (pipeline
               | "ListFiles" >> beam.Create([dataclasses.astuple(record)
                                             for record in scanned.records], reshuffle=True)
               | "Check" >> beam.FlatMap(_check, options.file_checks).with_outputs(
                   _QUARANTINED, main="accepted"))
    rejected = checked[_QUARANTINED]
    deduplicated = (checked.accepted
                    | "GroupByContent" >> beam.GroupByKey()
                    | "Deduplicate" >> beam.FlatMap(_deduplicate_group).with_outputs(
                        _QUARANTINED, main="kept"))
    # Without defaults: CombineGlobally's default for an empty input is injected through a
    # side input, and Beam's worker keeps side inputs decoded in its state cache; the list of
    # every kept file would stay there for the rest of the run.
    kept = (deduplicated.kept
            | "KeptList" >> beam.CombineGlobally(
                beam.combiners.ToListCombineFn()).without_defaults()
            | "InContentOrder" >> beam.FlatMap(_in_content_order))
    all_rejected = ((rejected, deduplicated[_QUARANTINED])
                    | "AllRejected" >> beam.Flatten()
                    | "RejectedList" >> beam.combiners.ToList())
    _ = (kept
         | "TallyKept" >> beam.CombineGlobally(_TallyKept())
         | "WriteReport" >> beam.Map(_write_report, beam.pvalue.AsSingleton(all_rejected),
                                     scanned.listing, options,
                                     exec_properties[REPORT_PATH_KEY]))
    return kept


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
        code_digest.check_component(
            _custom_values(exec_properties).get(code_digest.CODE_SHA256_KEY), "image_example_gen")
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        report_path = os.path.join(examples.uri, quarantine.REPORT_NAME)
        self._write_splits(examples, {**exec_properties, REPORT_PATH_KEY: report_path})
        report = quarantine.load(report_path)
        if report.problems():
            # TFX deletes a failed execution's outputs: keep the report where the user can read
            # it, beside the artifacts (<root>/ImageExampleGen/quarantine/<execution id>/).
            kept_path = os.path.join(os.path.dirname(os.path.dirname(examples.uri)),
                                     "quarantine", os.path.basename(examples.uri),
                                     quarantine.REPORT_NAME)
            report.write(kept_path)
            report.raise_on_problems(kept_path)

    def _write_splits(self, examples: Any, exec_properties: Dict[str, Any]) -> None:
        """BaseExampleGenExecutor.Do's writing, the same files and artifact properties, without
        its Reshuffle of every serialized example before the write: a GroupByKey that held the
        whole data set in memory. The order is settled on records without bytes instead."""
        input_config, output_config = _split_configs(exec_properties)
        examples.split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config, output_config))
        with self._make_beam_pipeline() as pipeline:
            for name, split in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                _ = split | f"WriteSplit[{name}]" >> beam.io.Write(_StoredGzipTFRecordSink(
                    os.path.join(artifact_utils.get_split_uri([examples], name),
                                 write_split.DEFAULT_FILE_NAME)))
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        if payload_format:
            examples_utils.set_payload_format(examples, payload_format)
        file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY)
        if file_format:
            examples_utils.set_file_format(examples, write_split.to_file_format_str(file_format))

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                               ) -> Dict[str, beam.pvalue.PCollection]:
        input_config, output_config = _split_configs(exec_properties)
        splits = output_config.split_config.splits
        names = [split.name for split in splits]
        total = sum(split.hash_buckets for split in splits)
        proportions = [split.hash_buckets / total for split in splits]

        file_checks = options_from_exec_properties(exec_properties).file_checks
        kept = pipeline | "InputToRecord" >> self.GetInputSourceToExamplePTransform()(  # pylint: disable=no-value-for-parameter
            exec_properties, input_config.splits[0].pattern)
        assignment = kept | "AssignPatients" >> _AssignPatients(proportions, names)  # pylint: disable=no-value-for-parameter
        partitions = kept | "SplitByPatient" >> beam.Partition(
            lambda row, _, patients: names.index(patients[_patient_label(row)[0]]),
            len(names), beam.pvalue.AsSingleton(assignment))
        # Read, converted and serialized per split inside the stage that writes it.
        return {name: partition | f"ToExample[{name}]" >> beam.Map(_serialized_example,
                                                                  file_checks)
                for name, partition in zip(names, partitions)}
