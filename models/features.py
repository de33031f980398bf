"""The feature contract shared by ingestion, schema, Transform, Trainer, Evaluator and serving.

The class order below is the model's output order. It is fixed (never derived from the
data) so that a probability vector means the same thing in every run, export and client.
"""
from typing import List

CLASS_NAMES: List[str] = ["COVID-19", "Pneumonia", "Normal"]
NUM_CLASSES = len(CLASS_NAMES)
COVID_CLASS_ID = CLASS_NAMES.index("COVID-19")

# Raw tf.Example features written by ExampleGen.
IMAGE_KEY = "image_raw"
LABEL_KEY = "label"
PATIENT_ID_KEY = "patient_id"
SOURCE_KEY = "source"
VIEW_KEY = "view"
AGE_GROUP_KEY = "age_group"
SEX_KEY = "sex"
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
# Describe the image, never feed the model: Transform drops them, the evaluation slices by some.
METADATA_KEYS = [PATIENT_ID_KEY, SOURCE_KEY, VIEW_KEY, AGE_GROUP_KEY, SEX_KEY]

AGE_GROUPS = ["adult", "pediatric", "unknown"]
UNKNOWN = "unknown"
# DICOM PatientSex codes. An example's sex is one of them or UNKNOWN: from the manifest's
# optional `sex` column, else the DICOM header, else UNKNOWN.
SEXES = ["M", "F", "O"]

# Features produced by Transform's preprocessing_fn.
IMAGE_XF_KEY = "image_xf"
LABEL_XF_KEY = "label_xf"

DEFAULT_IMAGE_SIZE = 224
CHANNELS = 3

# Names of the exported SavedModel's signatures and serving outputs.
SERVING_SIGNATURE = "serving_default"
TF_EXAMPLE_SIGNATURE = "serving_tf_example"
TRANSFORM_SIGNATURE = "transform_features"
PROBABILITIES_OUTPUT = "probabilities"
CLASS_NAMES_OUTPUT = "class_names"
PREDICTED_CLASS_OUTPUT = "predicted_class"
# The out-of-distribution gate (models/ood.py): higher = more like the training films.
CHEST_XRAY_SCORE_OUTPUT = "chest_xray_score"
IS_CHEST_XRAY_OUTPUT = "is_chest_xray"
SERVING_INPUT = "image_bytes"

SPLIT_NAMES = ["train", "eval", "test"]
