import tensorflow_data_validation as tfdv

from models import features
from schemas import SCHEMA_FILE


def test_schema_domains_match_the_feature_contract():
    schema = tfdv.load_schema_text(SCHEMA_FILE)
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert domains["label"] == features.CLASS_NAMES
    assert domains["age_group"] == features.AGE_GROUPS


def test_schema_has_every_example_feature_and_marks_image_bytes():
    schema = tfdv.load_schema_text(SCHEMA_FILE)
    names = {f.name for f in schema.feature}
    assert names == {features.IMAGE_KEY, features.LABEL_KEY, features.HEIGHT_KEY,
                     features.WIDTH_KEY, *features.METADATA_KEYS}
    image = next(f for f in schema.feature if f.name == features.IMAGE_KEY)
    assert image.HasField("image_domain")  # bytes statistics, not UTF-8 string statistics
    assert all(f.presence.min_fraction == 1.0 for f in schema.feature)
