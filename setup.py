"""Package metadata and the `cxr` console script (the single source for both)."""
from setuptools import find_packages, setup

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
                                    "components.*", "models", "models.*", "schemas",
                                    "serving", "serving.*"]),
    package_data={"models": ["weights/*.h5", "weights/*.md"], "schemas": ["*.pbtxt"]},
    install_requires=[
        "tfx>=1.16,<1.17",
        # KubeflowV2DagRunner (`cxr compile`) and Vertex AI's PipelineJob (`cxr submit`).
        "kfp>=2.13,<2.14",
        "kfp-pipeline-spec>=0.6,<0.7",
        "google-cloud-aiplatform>=1.165,<2",
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
        # onnx 1.19+ needs ml-dtypes>=0.5, which TensorFlow 2.16 (ml-dtypes~=0.3.1) excludes.
        "tf2onnx>=1.17,<1.18",
        "onnx>=1.17,<1.19",
        "onnxruntime>=1.20,<2",
    ],
    # Notebook execution (notebooks/notebooks_test.py runs them with nbclient).
    extras_require={"test": ["pytest>=8", "nbclient>=0.11,<0.12", "nbformat>=5.11,<6",
                             "ipykernel>=7.4,<8"]},
    entry_points={"console_scripts": ["cxr=cxr.cli:main"]},
)
