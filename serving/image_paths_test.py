"""One film, six encodings, every way of asking the model: the same probabilities.

The film is written as the upright 8-bit grayscale PNG (the reference), an EXIF-rotated PNG,
an RGBA PNG with a transparent border over random colours, a 16-bit PNG holding 12-bit data,
a MONOCHROME1 12-bit DICOM and an EXIF-rotated JPEG. Each goes through ingestion (the stored
bytes, predicted as the Evaluator and the model card do, through serving_tf_example), the web
app's path (upload check, then the local and the gRPC predictor), `cxr predict` over gRPC
and over REST, the Python gRPC and REST clients and `cxr gradcam`. All paths must agree for
each file, and every lossless encoding must give the reference's probabilities within 1e-4;
the JPEG, lossy, within 2e-2 and the same class.
"""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from app import predictors, uploads
from conftest import SAMPLE_DIR, sample_rows
from cxr import cli
from imaging import ingest, prepare
from imaging.conftest import make_dicom
from models import features
from models.preprocessing import decode_image
from serving import client, layout, rest, server

EXIF_ORIENTATION_TAG = prepare.EXIF_ORIENTATION_TAG
BORDER = 12  # px of black frame, where the RGBA file hides colours under alpha 0


def _save(path, image: Image.Image, fmt: str, **options) -> str:
    image.save(path, format=fmt, **options)
    return str(path)


def _film() -> np.ndarray:
    """A real sample film, 8-bit, stretched to the full range, with a black frame."""
    row = next(r for r in sample_rows() if r["label"] == "Pneumonia")
    with Image.open(os.path.join(SAMPLE_DIR, row["file"])) as image:
        pixels = np.asarray(image.convert("L").resize((192, 160)), dtype=np.float64)
    pixels = np.round((pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255)
    pixels[:BORDER], pixels[-BORDER:], pixels[:, :BORDER], pixels[:, -BORDER:] = 0, 0, 0, 0
    pixels[BORDER, BORDER] = 255  # the frame must not change the range
    return pixels.astype(np.uint8)


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """name -> file: the same film in each encoding."""
    folder = tmp_path_factory.mktemp("films")
    film = _film()
    upright = Image.fromarray(film, mode="L")
    rotate_back = Image.Exif()
    rotate_back[EXIF_ORIENTATION_TAG] = 6  # viewers turn it 90 degrees clockwise
    # Stored turned 90 degrees counter-clockwise; orientation 6 turns it upright again.
    stored_sideways = Image.fromarray(np.rot90(film).copy(), mode="L")
    rgba = np.dstack([film] * 3 + [np.full_like(film, 255)])
    noise = np.random.default_rng(0).integers(0, 256, rgba.shape[:2] + (3,), np.uint8)
    frame = film == 0
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    rgba[frame, :3], rgba[frame, 3] = noise[frame], 0
    return {
        "upright 8-bit PNG": _save(folder / "upright.png", upright, "PNG"),
        "EXIF-rotated PNG": _save(folder / "rotated.png", stored_sideways, "PNG",
                                  exif=rotate_back.tobytes()),
        "RGBA PNG": _save(folder / "rgba.png", Image.fromarray(rgba, mode="RGBA"), "PNG"),
        "16-bit PNG": _save(folder / "deep.png",
                            Image.fromarray(film.astype(np.uint16) * 16), "PNG"),
        "DICOM": _write(folder / "film.dcm", make_dicom(
            (255 - film.astype(np.uint16)) * 16, photometric="MONOCHROME1", bits_stored=12)),
        "upright JPEG": _save(folder / "upright.jpg", upright, "JPEG", quality=95),
        "EXIF-rotated JPEG": _save(folder / "rotated.jpg", stored_sideways, "JPEG",
                                   quality=95, exif=rotate_back.tobytes()),
    }


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _vector(probabilities) -> np.ndarray:
    return np.array([probabilities[name] for name in features.CLASS_NAMES])


@pytest.fixture(scope="module")
def served(pushed_model_base):
    """The tiny pipeline's model: barely trained, so its probabilities are far from 0 and 1
    and move with small changes of the input (a saturated softmax would hide them)."""
    running = server.start_server(pushed_model_base, port=0, rest_port=0)
    yield running
    running.stop()


def _ingested(paths, version_dir) -> np.ndarray:
    """What ingestion stores, predicted through serving_tf_example (Evaluator, model card)."""
    examples = []
    for path in paths:
        outcome = ingest.inspect_record(ingest.ImageRecord(path, "Normal", "p1"),
                                        prepare.CheckOptions())
        assert isinstance(outcome, ingest.Accepted), outcome
        examples.append(tf.train.Example(features=tf.train.Features(feature={
            features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[outcome.image.encoded]))})).SerializeToString())
    signature = tf.saved_model.load(version_dir).signatures[features.TF_EXAMPLE_SIGNATURE]
    return signature(examples=tf.constant(examples))[features.PROBABILITIES_OUTPUT].numpy()


def test_every_path_gives_every_encoding_the_reference_probabilities(
        films, served, tmp_path, capsys):
    names, paths = list(films), list(films.values())
    version_dir = served.servable.version_dir
    grpc_target = f"{server.LOOPBACK}:{served.grpc_port}"
    rest_url = f"http://{server.LOOPBACK}:{served.rest_port}"
    model_name = served.servable.model_name
    by_path = {"ingestion": _ingested(paths, version_dir)}

    local = predictors.LocalPredictor(layout.resolve(version_dir))
    remote = predictors.RemotePredictor(grpc_target, model_name)
    uploaded = [uploads.prepare_upload(os.path.basename(p), open(p, "rb").read()).encoded
                for p in paths]
    by_path["app, local model"] = np.stack([_vector(local.predict(u).probabilities)
                                            for u in uploaded])
    by_path["app, gRPC"] = np.stack([_vector(remote.predict(u).probabilities)
                                     for u in uploaded])

    with client.PredictionClient(grpc_target, model_name, batch_size=3) as grpc_client:
        by_path["Python gRPC client"] = np.stack(
            [_vector(p.probabilities) for p in grpc_client.predict_files(paths)])
    by_path["Python REST client"] = np.stack([_vector(p.probabilities) for p in rest.RestClient(
        rest_url, model_name, batch_size=4).predict_files(paths)])
    for flag, address in (("--server", grpc_target), ("--rest", rest_url)):
        assert cli.main(["predict", flag, address, "--model-name", model_name, "--json",
                         *paths]) == 0
        printed = json.loads(capsys.readouterr().out)
        by_path[f"cxr predict {flag}"] = np.stack([_vector(r["probabilities"])
                                                   for r in printed])
    out = tmp_path / "gradcam"
    assert cli.main(["gradcam", *paths, "--model", version_dir, "--out", str(out),
                     "--steps", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_path["cxr gradcam"] = np.stack([_vector(r["probabilities"])
                                       for r in summary["images"]])

    reference = by_path["ingestion"][names.index("upright 8-bit PNG")]
    report = {name: {path: np.round(values[i], 5).tolist() for path, values in by_path.items()}
              for i, name in enumerate(names)}
    print(json.dumps(report, indent=1))
    for path, values in by_path.items():
        # Every path answers each file exactly as ingestion + the Evaluator would.
        np.testing.assert_allclose(values, by_path["ingestion"], atol=1e-5, err_msg=path)
    for i, name in enumerate(names):
        tolerance = 2e-2 if "JPEG" in name else 1e-4
        np.testing.assert_allclose(by_path["ingestion"][i], reference, atol=tolerance,
                                   err_msg=name)
        assert by_path["ingestion"][i].argmax() == reference.argmax(), name
    # The tolerance is tight enough to matter: the rotated file's raw bytes, sent without
    # the image path, move the probabilities far beyond it.
    serve = tf.saved_model.load(version_dir).signatures[features.SERVING_SIGNATURE]
    sideways = serve(**{features.SERVING_INPUT: tf.constant(
        [open(films["EXIF-rotated PNG"], "rb").read()])})[features.PROBABILITIES_OUTPUT]
    assert np.abs(sideways.numpy()[0] - reference).max() > 1e-3


def test_without_the_image_path_the_model_would_see_other_pixels(films):
    """Why the one path matters: the raw bytes of the rotated, transparent and DICOM files
    do not decode to the film the model should see (or do not decode at all)."""
    size = 64
    reference = decode_image(tf.constant(open(films["upright 8-bit PNG"], "rb").read()),
                             size).numpy()
    for name in ("EXIF-rotated PNG", "RGBA PNG", "16-bit PNG", "DICOM", "EXIF-rotated JPEG"):
        data = open(films[name], "rb").read()
        prepared = decode_image(tf.constant(prepare.prepare_image(data).encoded), size).numpy()
        assert np.abs(prepared - reference).max() < (0.1 if "JPEG" in name else 1e-5), name
        if name == "16-bit PNG":
            continue  # TensorFlow decodes it as it is: nothing to correct
        try:
            raw = decode_image(tf.constant(data), size).numpy()
        except tf.errors.InvalidArgumentError:
            assert name == "DICOM"
            continue
        assert np.abs(raw - reference).mean() > 0.05, name


def test_a_prepared_image_prepares_to_itself(films):
    for path in films.values():
        once = prepare.prepare_image(open(path, "rb").read()).encoded
        assert prepare.prepare_image(once).encoded == once
        with Image.open(io.BytesIO(once)) as image:
            assert image.format in ("PNG", "JPEG")
