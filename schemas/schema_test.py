import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from imaging import ingest
from models import features
from schemas import SCHEMA_FILE


def test_schema_domains_match_the_feature_contract():
    schema = tfdv.load_schema_text(SCHEMA_FILE)
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert domains["label"] == features.CLASS_NAMES
    assert domains["age_group"] == features.AGE_GROUPS
    assert domains["sex"] == features.SEXES + [features.UNKNOWN]
    assert set(ingest.SEX_ALIASES.values()) == set(domains["sex"])


def test_schema_has_every_example_feature_and_marks_image_bytes():
    schema = tfdv.load_schema_text(SCHEMA_FILE)
    names = {f.name for f in schema.feature}
    assert names == {features.IMAGE_KEY, features.LABEL_KEY, features.HEIGHT_KEY,
                     features.WIDTH_KEY, *features.METADATA_KEYS}
    image = next(f for f in schema.feature if f.name == features.IMAGE_KEY)
    assert image.HasField("image_domain")  # bytes statistics, not UTF-8 string statistics
    assert all(f.presence.min_fraction == 1.0 for f in schema.feature)


def _sex_anomalies(values):
    """ExampleValidator's check of a sex column, on TFDV statistics of real values."""
    schema = tfdv.load_schema_text(SCHEMA_FILE)
    sex_only = type(schema)()
    sex_only.CopyFrom(schema)
    del sex_only.feature[:]
    sex_only.feature.add().CopyFrom(next(f for f in schema.feature if f.name == features.SEX_KEY))
    statistics = tfdv.generate_statistics_from_dataframe(pd.DataFrame({features.SEX_KEY: values}))
    return tfdv.validate_statistics(statistics, sex_only).anomaly_info


def test_schema_accepts_every_sex_ingestion_writes():
    assert dict(_sex_anomalies(features.SEXES + [features.UNKNOWN] * 3)) == {}


@pytest.mark.parametrize("value", ["X", "male", "f"])
def test_schema_flags_a_sex_outside_the_vocabulary(value):
    anomalies = _sex_anomalies(["M", "F", value])
    assert list(anomalies) == [features.SEX_KEY]
    assert value in anomalies[features.SEX_KEY].description
