"""The serving folder layout: which SavedModel a path names, and which version is next."""
import os

import pytest
import tensorflow as tf

from serving import layout


def _version(path) -> str:
    os.makedirs(path)
    open(os.path.join(path, "saved_model.pb"), "wb").close()
    return str(path)


def test_resolve_accepts_serving_dir_model_dir_or_version(tmp_path):
    _version(tmp_path / "cxr_classifier" / "7")
    newest = _version(tmp_path / "cxr_classifier" / "12")
    expected = layout.ModelVersion("cxr_classifier", "12", newest)
    assert layout.resolve(str(tmp_path)) == expected
    assert layout.resolve(str(tmp_path / "cxr_classifier")) == expected
    assert layout.resolve(newest) == expected
    older = str(tmp_path / "cxr_classifier" / "7")
    assert layout.resolve(older).version == "7"


def test_resolve_needs_a_name_when_several_models_are_pushed(tmp_path):
    _version(tmp_path / "cxr_classifier" / "1")
    other = _version(tmp_path / "cxr_baseline" / "3")
    with pytest.raises(layout.ModelDirError) as error:
        layout.resolve(str(tmp_path))
    assert str(error.value) == (f"{tmp_path} holds the models cxr_baseline, cxr_classifier: "
                                "choose one with --model-name")
    assert layout.resolve(str(tmp_path), "cxr_baseline").directory == other


def test_resolve_explains_missing_models(tmp_path):
    with pytest.raises(layout.ModelDirError, match="model directory not found"):
        layout.resolve(str(tmp_path / "nope"))
    with pytest.raises(layout.ModelDirError, match="no numbered SavedModel versions"):
        layout.resolve(str(tmp_path))


def test_newest_version_is_the_highest_number(tmp_path):
    for version in ("9", "10", "3", "not_a_version"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    (tmp_path / "11").mkdir()  # an unfinished copy without saved_model.pb
    assert layout.newest_version(str(tmp_path)) == (10, str(tmp_path / "10"))
    with pytest.raises(layout.ModelDirError, match="single version"):
        layout.newest_version(str(tmp_path / "10"))
    with pytest.raises(layout.ModelDirError, match="no numbered SavedModel versions"):
        layout.newest_version(str(tmp_path / "11"))


def test_version_is_newer_than_every_existing_one(tmp_path):
    (tmp_path / "9999999999").mkdir()
    (tmp_path / ".staging-5").mkdir()
    assert layout.next_version(str(tmp_path)) == "10000000000"
    assert int(layout.next_version(str(tmp_path / "empty"))) > 1_700_000_000


def test_find_saved_model_takes_a_version_a_trainer_artifact_or_a_base_path(tmp_path):
    version = _version(tmp_path / "serving" / "cxr" / "4")
    trainer = _version(tmp_path / "Trainer" / "model" / "7" / layout.TRAINER_EXPORT_DIR)
    assert layout.find_saved_model(version) == version
    assert layout.find_saved_model(str(tmp_path / "Trainer" / "model" / "7")) == trainer
    assert layout.find_saved_model(str(tmp_path / "serving" / "cxr")) == version
    with pytest.raises(layout.ModelDirError, match=r"no SavedModel in .*empty \(expected "
                                                   r"saved_model.pb, Format-Serving/"):
        layout.find_saved_model(str(tmp_path / "empty"))


class _Doubler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def double(self, values):
        return values * 2


def test_a_folder_without_a_keras_model_is_one_clear_error(tmp_path):
    damaged = _version(tmp_path / "3")  # an empty saved_model.pb
    with pytest.raises(layout.ModelDirError, match=r"3 holds no Keras model: "):
        layout.load_keras_model(damaged)
    tf.saved_model.save(_Doubler(), str(tmp_path / "4"))
    with pytest.raises(layout.ModelDirError, match=r"4 holds no Keras model: it was saved "
                                                   r"without Keras"):
        layout.load_keras_model(str(tmp_path / "4"))


def test_the_layout_reads_cloud_storage(gcs_dir, tmp_path):
    local = _version(tmp_path / "cxr" / "5")
    tf.io.gfile.makedirs(f"{gcs_dir}/cxr/5")
    tf.io.gfile.copy(f"{local}/saved_model.pb", f"{gcs_dir}/cxr/5/saved_model.pb")
    assert layout.newest_version(f"{gcs_dir}/cxr") == (5, f"{gcs_dir}/cxr/5")
    assert layout.resolve(f"{gcs_dir}/") == layout.ModelVersion("cxr", "5", f"{gcs_dir}/cxr/5")
    assert int(layout.next_version(f"{gcs_dir}/cxr")) > 5
