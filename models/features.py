"""The feature contract shared by ingestion, schema, Transform, Trainer, Evaluator and serving.

The class order below is the model's output order. It is fixed (never derived from the
data) so that a probability vector means the same thing in every run, export and client.
"""
from typing import Dict, List

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
# Manifest spellings, matched after lower-casing and stripping; an empty cell is UNKNOWN too.
SEX_ALIASES: Dict[str, str] = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "o": "O",
    "other": "O",
    "u": UNKNOWN,
    "unknown": UNKNOWN,
}

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

# The model card inside a pushed version directory (SERVING_DIR/<model_name>/<version>/):
# assets.extra/ is the folder TF Serving leaves alone.
SERVING_EXTRAS_DIR = "assets.extra"
MODEL_CARD_FILE = "model_card.json"
MODEL_CARD_PATH = f"{SERVING_EXTRAS_DIR}/{MODEL_CARD_FILE}"
# What training did (best epoch, eval losses, the folded temperature), written by the Trainer.
TRAINING_SUMMARY_FILE = "training.json"

SPLIT_NAMES = ["train", "eval", "test"]

# Architectures models/builders.py can build (`cxr run --model`).
MODEL_NAMES = ("baseline_cnn", "mobilenet_v2", "efficientnet_lite0", "efficientnet_b0",
               "resnet50")

# Folder names users give their classes (Kaggle and hospital exports), matched after
# lower-casing and dropping spaces, dashes and underscores.
LABEL_ALIASES: Dict[str, str] = {
    "covid19": "COVID-19",
    "covid": "COVID-19",
    "sarscov2": "COVID-19",
    "pneumonia": "Pneumonia",
    "viral": "Pneumonia",
    "bacterial": "Pneumonia",
    "viralpneumonia": "Pneumonia",
    "bacterialpneumonia": "Pneumonia",
    "normal": "Normal",
    "nofinding": "Normal",
    "healthy": "Normal",
}
