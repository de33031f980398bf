# The pipeline image: every Vertex AI Pipelines step, the Vertex AI Training job and the
# Dataflow workers run this. Build it from the repository root (see docs/running.md,
# "Vertex AI Pipelines").
#
# The official TFX image of the version constraints.txt pins already holds the whole stack
# (TFX, TensorFlow, tf-keras, TFMA, Beam, KFP); its entrypoint is Beam's SDK harness, which
# Dataflow needs, while Vertex AI Pipelines sets its own command.
FROM tensorflow/tfx:1.16.0

# TFX's executor entrypoint imports TensorFlow before this project can select Keras 2.
ENV TF_USE_LEGACY_KERAS=1

# Compiled specs name files under /cxr (IMAGE_PROJECT_DIR in pipeline/config.py). Editable,
# so the modules, the schema and the MobileNetV2 weights exist once, under /cxr. --no-deps:
# the base image's stack must not be replaced by other versions. The DICOM readers are not in
# the base image: setup.py's "dicom" extra is installed on its own (requirements.py lists it).
WORKDIR /cxr
COPY . /cxr
RUN pip install --no-cache-dir --no-deps -e /cxr \
    && python -m cxr.requirements dicom > /tmp/dicom-requirements.txt \
    && pip install --no-cache-dir -r /tmp/dicom-requirements.txt \
    && python -c "import pipeline.pipeline, models.trainer, models.preprocessing, pydicom, pylibjpeg"
