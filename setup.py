"""Package metadata and the `cxr` console script (the single source for both)."""
from setuptools import find_packages, setup

# DICOM input; the plugins decode JPEG (baseline, extended, lossless, JPEG-LS), JPEG 2000 and
# RLE pixel data. Newer libjpeg/openjpeg plugins need numpy 2. Also the "dicom" extra, which
# the Dockerfile installs on top of the TFX image (whose stack holds everything else).
DICOM_REQUIREMENTS = [
    "pydicom>=3.0,<3.1",
    "pylibjpeg>=2.0,<2.1",
    "pylibjpeg-libjpeg>=2.2,<2.3",
    "pylibjpeg-openjpeg>=2.3,<2.4",
    "pylibjpeg-rle>=2.0,<2.1",
]

setup(
    name="cxr-tfx",
    version="0.1.0",
    description="TFX pipeline for chest X-ray classification (COVID-19 / Pneumonia / Normal); "
                "research and education only, not for clinical use.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["cxr", "cxr.*", "pipeline", "pipeline.*", "components",
                                    "components.*", "imaging", "imaging.*", "explain", "explain.*",
                                    "evaluation", "evaluation.*", "models", "models.*",
                                    "schemas", "serving", "serving.*", "app", "app.*"]),
    package_data={"models": ["weights/*.h5", "weights/*.md"], "schemas": ["*.pbtxt"]},
    install_requires=[
        "tfx>=1.16,<1.17",
        "tensorflow>=2.16,<2.17",
        "tf-keras>=2.16,<2.17",
        "tensorflow-transform>=1.16,<1.17",
        "tensorflow-model-analysis>=0.47,<0.48",
        "tensorflow-data-validation>=1.16,<1.17",
        "tensorflow-serving-api>=2.16,<2.17",
        "apache-beam>=2.61,<2.62",
        "pillow>=10",
        "scipy>=1.12,<2",
        # Model card and `cxr compare` figures (confusion matrices, ROC curves).
        "matplotlib>=3.8,<3.9",
        *DICOM_REQUIREMENTS,
    ],
    # The optional parts: a command that needs a missing one says which to install
    # (cxr/requirements.py). `make install` installs them all.
    extras_require={
        # `cxr app`. Streamlit 1.60 is the newest release that accepts protobuf 4 (TFX 1.16);
        # those releases also cap pillow below 13 (constraints.txt pins pillow 12).
        "app": ["streamlit>=1.55,<1.61"],
        # `cxr export --format onnx`. onnx 1.19+ needs ml-dtypes>=0.5, which TensorFlow 2.16
        # (ml-dtypes~=0.3.1) excludes.
        "export": ["tf2onnx>=1.17,<1.18", "onnx>=1.17,<1.19", "onnxruntime>=1.20,<2"],
        # `cxr compile` (KubeflowV2DagRunner), `cxr submit` (Vertex AI's PipelineJob) and
        # `cxr run-spec`; --emulate-gcs serves Cloud Storage on loopback over TLS with a
        # throw-away CA (pipeline/gcs_emulator.py).
        "vertex": ["kfp>=2.13,<2.14", "kfp-pipeline-spec>=0.6,<0.7",
                   "google-cloud-aiplatform>=1.165,<2",
                   "gcp-storage-emulator>=2026.7.19,<2026.8", "cryptography>=42"],
        "dicom": DICOM_REQUIREMENTS,
        # The browser test drives Debian's chromium (apt) with Playwright; no browser download.
        # nbclient, nbformat, ipykernel: notebooks/notebooks_test.py executes the notebooks.
        # pyjpegls encodes the DICOM tests' JPEG-LS files (pydicom has no encoder of its own;
        # decoding needs only pylibjpeg-libjpeg above); 1.5 needs numpy 2.
        "test": ["pytest>=8", "playwright>=1.65,<2", "nbclient>=0.11,<0.12",
                 "nbformat>=5.11,<6", "ipykernel>=7.4,<8", "pyjpegls>=1.4,<1.5"],
        # bench/ samples the pipeline's memory (python -m bench, `make bench`).
        # py-spy: where the time goes when a goal is missed (docs/benchmarks.md).
        "bench": ["psutil>=7,<8", "py-spy>=0.4,<0.5"],
    },
    entry_points={"console_scripts": ["cxr=cxr.cli:main"]},
)
