"""The web demo's page: upload a chest X-ray, see the prediction, its Grad-CAM and the model card.

Start it with `cxr app --model-dir SERVING_DIR` (app/launch.py builds the `streamlit run`
command). Streamlit re-runs this script on every interaction; the model is loaded once per
server (st.cache_resource) and each upload is analysed once per session (st.session_state).
"""
import dataclasses
import sys
from typing import Dict, Optional

import models  # noqa: F401  (before TensorFlow: selects Keras 2)
import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image

from app import launch, model_card, predictors, uploads
from explain import gradcam
from models import features
from serving import client, layout

DISCLAIMER = ("**Research and education only. This is not a diagnostic device:** never use "
              "its output to diagnose, triage or treat anyone. The model learned from small "
              "public data sets with known shortcuts.")
OVERLAY_WIDTH = 720  # px: input and heatmap side by side, each about as wide as the upload
NO_HEATMAP = ("Grad-CAM heatmap unavailable: it needs the model's weights in this process. "
              "Start the app with --model-dir as well as --server.")


@st.cache_resource(show_spinner="Loading the model (once per app start)…")
def local_predictor(name: str, version: str, directory: str) -> predictors.LocalPredictor:
    return predictors.LocalPredictor(layout.ModelVersion(name, version, directory))


@st.cache_resource(show_spinner="Checking the server's signature…")
def remote_predictor(target: str, model_name: str) -> predictors.RemotePredictor:
    predictor = predictors.RemotePredictor(target, model_name)
    predictor.check()
    return predictor


def show_model_card(version_dir: str) -> None:
    try:
        card = model_card.read_model_card(version_dir)
        metrics = model_card.headline_metrics(card) if card else []
    except model_card.ModelCardError as error:
        st.error(str(error))
        return
    if card is None:
        st.markdown("No model card found for this version.")
        return
    blessed = "blessed" if card.get("blessed") else "**not blessed**"
    st.markdown(f"Model card: version `{card.get('version')}`, {card.get('model')}, "
                f"created {card.get('created')}, {blessed} by the Evaluator.")
    st.markdown(f"Test split: {card.get('n_test_images')} images from "
                f"{card.get('n_test_patients')} patients.")
    st.markdown("\n".join(f"- {metric.label}: {metric.text()}" for metric in metrics))


def show_sidebar(local: Optional[predictors.LocalPredictor],
                 remote: Optional[predictors.RemotePredictor]) -> None:
    with st.sidebar:
        st.header("Model")
        if remote:
            st.markdown(f"Predictions from `{remote.target}`, model `{remote.model_name}` "
                        "(the version it serves).")
        if local:
            st.markdown(f"`{local.model.name}` version `{local.model.version}`, loaded from "
                        f"`{local.model.directory}`.")
            if remote:
                st.markdown("Grad-CAM and the model card come from this local copy; they "
                            "match the predictions only if the server serves the same version.")
            show_model_card(local.model.directory)
        else:
            st.markdown("No model card found for this version: the card is read from the "
                        "model's folder (start the app with --model-dir).")


def probability_chart(prediction: client.Prediction) -> alt.Chart:
    data = pd.DataFrame({"class": list(prediction.probabilities),
                         "probability": list(prediction.probabilities.values())})
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("class:N", sort=features.CLASS_NAMES, title=None,
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
        tooltip=["class", alt.Tooltip("probability:Q", format=".3f")])


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One upload's outcome: a message for the page, or the prediction and its overlays."""
    error: Optional[str] = None
    image: bytes = b""  # as the model sees it (what ingestion would have stored)
    conversion: Optional[str] = None  # why `image` differs from the upload, if it does
    prediction: Optional[client.Prediction] = None
    overlays: Optional[Dict[str, Image.Image]] = None  # None: no local model for Grad-CAM


def analyse(name: str, data: bytes, local: Optional[predictors.LocalPredictor],
            predictor: predictors.Predictor) -> Analysis:
    try:
        prepared = uploads.prepare_upload(name, data)
        image = prepared.encoded
        prediction = predictor.predict(image)
    except uploads.UploadError as error:
        return Analysis(error=str(error))
    except client.ServingError as error:
        return Analysis(error=f"Prediction failed: {error}")
    overlays = predictors.class_overlays(local.cam, image) if local else None
    return Analysis(image=image, conversion=prepared.conversion, prediction=prediction,
                    overlays=overlays)


def show_prediction(prediction: client.Prediction) -> None:
    """The class and its probabilities; led by the gate's verdict when it flags the image."""
    scores = ", ".join(f"{name} {p:.3f}" for name, p in prediction.probabilities.items())
    if prediction.is_chest_xray is False:
        st.markdown(f"#### {client.NOT_A_CHEST_XRAY.capitalize()}")
        st.warning(f"The model's gate scores this image {prediction.chest_xray_score:.3f}: it "
                   "does not look like the frontal chest films the model learned from, so "
                   "its class means nothing here. Shown only for reference:", icon="🚫")
        st.markdown(f"##### Predicted class, were it a chest X-ray: "
                    f"{prediction.predicted_class}")
    else:
        st.markdown(f"#### Predicted class: {prediction.predicted_class}")
    st.altair_chart(probability_chart(prediction), width="stretch")
    if prediction.chest_xray_score is not None:
        scores += f"; chest X-ray score {prediction.chest_xray_score:.3f}"
    st.caption(scores)


def show_analysis(upload, analysis: Analysis, local: Optional[predictors.LocalPredictor]
                  ) -> None:
    if analysis.error:
        st.error(analysis.error)
        return
    prediction = analysis.prediction
    left, right = st.columns(2)
    caption = (f"{upload.name} as the model sees it ({analysis.conversion})"
               if analysis.conversion else f"{upload.name} as uploaded")
    left.image(analysis.image, caption=caption, width="stretch")
    with right:
        show_prediction(prediction)
    st.subheader("Grad-CAM")
    if analysis.overlays is None:
        st.info(NO_HEATMAP)
        return
    chosen = st.radio("Heatmap for class", features.CLASS_NAMES, horizontal=True,
                      index=features.CLASS_NAMES.index(prediction.predicted_class),
                      key=f"heatmap-class-{upload.file_id}")
    size = local.cam.image_size
    st.image(analysis.overlays[chosen], width=OVERLAY_WIDTH, output_format="PNG",
             caption=f"Grad-CAM for {chosen}: the model's {size}×{size} px input (left) and "
                     "the heatmap over it (right)")
    st.caption("A heatmap shows which regions moved this model's score, not where disease is.")


def main() -> None:
    st.set_page_config(page_title="cxr-tfx demo (not for clinical use)", layout="wide")
    st.warning(DISCLAIMER, icon="⚠️")
    st.title("Chest X-ray classifier: COVID-19 / Pneumonia / Normal")
    try:
        options = launch.parse_page_arguments(sys.argv[1:])
        local = remote = None
        if options.model_dir:
            model = layout.resolve(options.model_dir, options.model_name)
            local = local_predictor(model.name, model.version, model.directory)
        if options.server:
            remote = remote_predictor(options.server, options.model_name)
    except (launch.LaunchError, layout.ModelDirError, gradcam.GradCamError,
            client.ServingError) as error:
        st.error(f"The app cannot start: {error}")
        st.stop()
    show_sidebar(local, remote)

    upload = st.file_uploader(
        f"A frontal chest X-ray: PNG, JPEG or DICOM, at most {uploads.MAX_UPLOAD_MB} MB",
        max_upload_size=uploads.MAX_UPLOAD_MB)
    if upload is None:
        return
    if st.session_state.get("analysed_file") != upload.file_id:
        with st.spinner("Classifying…"):
            st.session_state.analysis = analyse(upload.name, upload.getvalue(), local,
                                                remote or local)
        st.session_state.analysed_file = upload.file_id
    show_analysis(upload, st.session_state.analysis, local)


main()
