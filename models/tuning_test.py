import keras_tuner
import pytest

from models import builders, trainer, tuning

TRANSFER_SPACE = {
    "head_learning_rate": [1e-3, 3e-4],
    "dropout": [0.2, 0.4],
    "label_smoothing": [0.0, 0.1],
    "fine_tune_learning_rate": [1e-4, 3e-5],
    "fine_tune_layers": [60, builders.ALL_LAYERS],
}


def _choices(space: keras_tuner.HyperParameters) -> dict:
    return {hp.name: list(hp.values) for hp in space.space}


@pytest.mark.parametrize("model_name", ["mobilenet_v2", "efficientnet_lite0", "resnet50"])
def test_transfer_models_also_tune_fine_tuning(model_name):
    assert _choices(tuning.search_space(model_name)) == TRANSFER_SPACE


def test_baseline_cnn_has_no_fine_tuning_to_tune():
    space = tuning.search_space("baseline_cnn")
    assert _choices(space) == {k: TRANSFER_SPACE[k]
                               for k in ("head_learning_rate", "dropout", "label_smoothing")}
    # 2 x 2 x 2 combinations against 32 for a transfer model.
    assert len(space.space) == 3


def test_an_unknown_model_name_gets_the_transfer_space_and_fails_at_build():
    """search_space does not check names; build_model does, before any trial trains."""
    assert _choices(tuning.search_space("not_a_model")) == TRANSFER_SPACE
    with pytest.raises(ValueError, match="unknown model 'not_a_model'"):
        trainer.build_model(dict(trainer.DEFAULTS, model="not_a_model"))


def test_every_tuned_name_is_a_trainer_setting():
    """A misspelt hyperparameter would be tuned and then silently ignored by Trainer."""
    assert set(TRANSFER_SPACE) <= set(trainer.DEFAULTS)


def test_the_best_hyperparameters_reach_trainer_as_the_tuner_writes_them():
    space = tuning.search_space("mobilenet_v2")
    space.values.update(dropout=0.4, fine_tune_layers=60, fine_tune_learning_rate=3e-5)
    # Tuner's best_hyperparameters artifact holds HyperParameters.get_config() as JSON.
    config = trainer.training_config({"model": "mobilenet_v2", "dropout": 0.1, "epochs": 2},
                                     space.get_config())
    assert (config["dropout"], config["fine_tune_layers"],
            config["fine_tune_learning_rate"]) == (0.4, 60, 3e-5)
    # Untouched choices take their first value; the rest stays as configured.
    assert (config["head_learning_rate"], config["label_smoothing"]) == (1e-3, 0.0)
    assert (config["epochs"], config["batch_size"]) == (2, trainer.DEFAULTS["batch_size"])

