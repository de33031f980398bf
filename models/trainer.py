"""Trainer's module: input pipeline, two-phase training and the exported signatures.

Transformed images are not materialised (docs/pipeline.md, Transform): the input pipeline
reads the raw ExampleGen records and applies the Transform graph on the fly.
"""
import json
import math
import os
from typing import Dict, List, Optional, Tuple

import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import (architectures, assets_extra, balance, builders, calibration, features,
                    ood)

# The default recipe, chosen on cxr4's eval split (docs/results/cxr4/): fine-tuning the whole
# backbone for 16 epochs scored higher there than the top 30 layers for 10 epochs (macro-F1
# 0.831 against 0.792, adult films 0.761 against 0.716).
DEFAULTS = {
    "model": "mobilenet_v2",
    "epochs": 16,
    "batch_size": 16,
    "image_size": features.DEFAULT_IMAGE_SIZE,
    "head_learning_rate": 1e-3,
    "fine_tune_learning_rate": 1e-4,
    "fine_tune_layers": builders.ALL_LAYERS,
    "dropout": 0.3,
    "early_stopping_patience": 4,
    "label_smoothing": 0.0,
    "seed": 0,
    "weights": None,
    "balance": balance.DEFAULT,
}


def training_config(custom_config: Dict, hyperparameters: Optional[Dict] = None) -> Dict:
    """Defaults, then the pipeline's custom_config, then the Tuner's best hyperparameters."""
    config = dict(DEFAULTS)
    config.update({k: v for k, v in (custom_config or {}).items() if v is not None})
    if hyperparameters:
        config.update(keras_tuner.HyperParameters.from_config(hyperparameters).values)
    return config


def phase_epochs(model_name: str, epochs: int) -> Tuple[int, int]:
    """(head epochs, fine-tune epochs). Transfer models spend about 40% on the head first."""
    if model_name == architectures.BASELINE_CNN:
        return epochs, 0
    head = max(1, round(epochs * 0.4))
    return head, epochs - head


def _records(file_patterns: List[str]) -> tf.data.TFRecordDataset:
    files = tf.io.gfile.glob(file_patterns)
    return tf.data.TFRecordDataset(files, compression_type="GZIP")


def group_counts(file_patterns: List[str]) -> Dict[Tuple[str, str], int]:
    """Examples per (label, source) in the given files, reading only those two features."""
    spec = {key: tf.io.FixedLenFeature([], tf.string)
            for key in (features.LABEL_KEY, features.SOURCE_KEY)}
    counts: Dict[Tuple[str, str], int] = {}
    for serialized in _records(file_patterns).batch(256):
        parsed = tf.io.parse_example(serialized, spec)
        for label, source in zip(parsed[features.LABEL_KEY].numpy(),
                                 parsed[features.SOURCE_KEY].numpy()):
            key = (label.decode(), source.decode())
            counts[key] = counts.get(key, 0) + 1
    return counts


def class_totals(counts: Dict[Tuple[str, str], int]) -> np.ndarray:
    """Examples per class, in features.CLASS_NAMES order, from group_counts."""
    totals = np.zeros(features.NUM_CLASSES, dtype=np.int64)
    for (label, _), count in counts.items():
        totals[features.CLASS_NAMES.index(label)] += count
    return totals


def class_weights(counts: np.ndarray) -> Dict[int, float]:
    """Keras class_weight for the default balance, for scripts that do not read sources."""
    weights = balance.group_weights({(name, ""): int(count) for name, count
                                     in zip(features.CLASS_NAMES, counts)}, balance.CLASS)
    return {i: weights.get((name, ""), 0.0) for i, name in enumerate(features.CLASS_NAMES)}


def group_weight_lookup(weights: Dict[Tuple[str, str], float]):
    """A graph function: (labels, sources) string tensors -> each example's group weight."""
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        [f"{label}\x1f{source}" for label, source in weights], list(weights.values()),
        value_dtype=tf.float32), default_value=1.0)

    def lookup(labels: tf.Tensor, sources: tf.Tensor) -> tf.Tensor:
        return table.lookup(tf.strings.join([tf.reshape(labels, [-1]),
                                             tf.reshape(sources, [-1])], "\x1f"))

    return lookup


def input_fn(file_patterns: List[str], data_accessor: tfx.components.DataAccessor,
             tf_transform_output: tft.TFTransformOutput, batch_size: int,
             training: bool, weights: Optional[Dict[Tuple[str, str], float]] = None
             ) -> tf.data.Dataset:
    """(image, label) batches, or (image, label, weight) with balance.group_weights given."""
    dataset = data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=training,
                                       num_epochs=None if training else 1),
        tf_transform_output.raw_metadata.schema)
    tft_layer = tf_transform_output.transform_features_layer()

    weight_of = group_weight_lookup(weights) if weights else None

    def transform(raw):
        transformed = tft_layer(raw)
        batch = transformed[features.IMAGE_XF_KEY], transformed[features.LABEL_XF_KEY]
        if weight_of is None:
            return batch
        return (*batch, weight_of(raw[features.LABEL_KEY], raw[features.SOURCE_KEY]))

    return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class BestEpoch(tf.keras.callbacks.Callback):
    """The lowest-val_loss epoch's weights across every `fit` call, and early stopping.

    Keras' EarlyStopping is reset when each `fit` starts and restores the best weights only
    when it stops training itself, so with two phases the exported model was usually the
    last epoch's. This keeps the best across both phases; patience counts within a phase
    (unfreezing the backbone may cost an epoch or two before the loss falls again).
    Variables are kept by object, not by position: `model.weights` lists trainable weights
    first, so its order changes when the backbone is unfrozen.
    """

    def __init__(self, patience: int, monitor: str = "val_loss"):
        super().__init__()
        self.patience, self.monitor = patience, monitor
        self.best = math.inf
        self.best_epoch: Optional[int] = None
        self.losses: List[float] = []
        self._best_values: Optional[List[Tuple[tf.Variable, np.ndarray]]] = None
        self._wait = 0

    def on_train_begin(self, logs=None):
        self._wait = 0

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get(self.monitor, math.nan))
        self.losses.append(loss)
        if loss < self.best:
            self.best, self.best_epoch, self._wait = loss, epoch, 0
            self._best_values = [(v, v.numpy()) for v in self.model.weights]
            return
        self._wait += 1
        if self._wait >= self.patience:
            self.model.stop_training = True

    def restore(self) -> None:
        if self._best_values is None:
            raise RuntimeError(f"no epoch reported a finite {self.monitor}")
        for variable, value in self._best_values:
            variable.assign(value)


def _compile(model: tf.keras.Model, learning_rate, label_smoothing: float) -> None:
    def loss(labels, probabilities):
        targets = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), features.NUM_CLASSES)
        return tf.keras.losses.categorical_crossentropy(targets, probabilities,
                                                        label_smoothing=label_smoothing)

    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=["sparse_categorical_accuracy"])


def build_model(config: Dict) -> tf.keras.Model:
    return builders.build(config["model"], config["image_size"], config["dropout"],
                          weights=config["weights"])


def fit_two_phases(model: tf.keras.Model, config: Dict, train: tf.data.Dataset,
                   validation: tf.data.Dataset, steps_per_epoch: int,
                   **fit_kwargs) -> BestEpoch:
    """Train the head on a frozen backbone, then fine-tune the backbone's top layers; leave
    the model at its best eval-loss epoch of either phase.

    Shared by Trainer and each Tuner trial, so that tuning scores the training that ships.
    The fine-tuning learning rate falls along a cosine to zero over its phase.
    """
    best = BestEpoch(config["early_stopping_patience"])
    fit_kwargs["callbacks"] = list(fit_kwargs.get("callbacks") or []) + [best]
    head_epochs, fine_tune_epochs = phase_epochs(config["model"], config["epochs"])
    _compile(model, config["head_learning_rate"], config["label_smoothing"])
    model.fit(train, epochs=head_epochs, validation_data=validation,
              steps_per_epoch=steps_per_epoch, **fit_kwargs)
    if fine_tune_epochs:
        builders.set_fine_tuning(model, config["fine_tune_layers"])
        schedule = tf.keras.optimizers.schedules.CosineDecay(
            config["fine_tune_learning_rate"], decay_steps=fine_tune_epochs * steps_per_epoch)
        _compile(model, schedule, config["label_smoothing"])
        model.fit(train, initial_epoch=head_epochs, epochs=head_epochs + fine_tune_epochs,
                  validation_data=validation, steps_per_epoch=steps_per_epoch, **fit_kwargs)
    best.restore()
    return best


def steps_per_epoch(counts: np.ndarray, batch_size: int, step_cap: Optional[int]) -> int:
    steps = max(1, math.ceil(counts.sum() / batch_size))
    return min(steps, step_cap) if step_cap else steps


def export_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                      gate: Optional[ood.GateFit] = None
                      ) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """serving_default (raw image bytes), serving_tf_example (TFMA) and transform_features;
    with a fitted gate, the predictions also carry chest_xray_score and is_chest_xray."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    class_names = tf.constant(features.CLASS_NAMES)
    raw_spec = tf_transform_output.raw_feature_spec()
    image_spec = {features.IMAGE_KEY: raw_spec[features.IMAGE_KEY]}
    # The chest X-ray gate (models/ood.py): one forward pass gives the probabilities and the
    # features the gate watches.
    gate_model = ood.feature_model(model) if gate else None
    gate_module = ood.GateModule(gate) if gate else None

    def predict(raw_features):
        images = model.tft_layer(raw_features)[features.IMAGE_XF_KEY]
        if gate_module is None:
            probabilities, gate_outputs = model(images, training=False), {}
        else:
            probabilities, *pooled = gate_model(images, training=False)
            gate_outputs = gate_module(pooled)
        return {
            features.PROBABILITIES_OUTPUT: probabilities,
            features.CLASS_NAMES_OUTPUT: tf.tile(class_names[tf.newaxis],
                                                 [tf.shape(probabilities)[0], 1]),
            features.PREDICTED_CLASS_OUTPUT: tf.gather(class_names,
                                                       tf.argmax(probabilities, axis=-1)),
            **gate_outputs,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.SERVING_INPUT)])
    def serve_image_bytes(image_bytes):
        return predict({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        return predict(tf.io.parse_example(serialized, image_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(serialized):
        raw = tf.io.parse_example(serialized, raw_spec)
        return {features.LABEL_XF_KEY: model.tft_layer(raw)[features.LABEL_XF_KEY]}

    return {
        features.SERVING_SIGNATURE: serve_image_bytes.get_concrete_function(),
        features.TF_EXAMPLE_SIGNATURE: serve_tf_examples.get_concrete_function(),
        features.TRANSFORM_SIGNATURE: transform_features.get_concrete_function(),
    }


def predict_dataset(model: tf.keras.Model, dataset: tf.data.Dataset
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of every (image, label) batch of a finite dataset."""
    labels, (probabilities,) = ood.predict_batches(model, dataset)
    return labels, probabilities


def calibrate(model: tf.keras.Model, validation: tf.data.Dataset) -> Dict[str, float]:
    """Fold the eval split's temperature into the model; returns the numbers behind it."""
    return fold_calibration(model, *predict_dataset(model, validation))


def fold_calibration(model: tf.keras.Model, labels: np.ndarray, probabilities: np.ndarray
                     ) -> Dict[str, float]:
    """calibrate, from the model's eval-split probabilities already predicted."""
    temperature = calibration.fit_temperature(labels, probabilities)
    calibration.fold_temperature(model, temperature)
    calibrated = calibration.apply_temperature(probabilities, temperature)
    return {
        "temperature": temperature,
        "eval_images": int(len(labels)),
        "eval_nll_before": calibration.negative_log_likelihood(labels, probabilities),
        "eval_nll_after": calibration.negative_log_likelihood(labels, calibrated),
    }


def write_training_summary(summary: Dict, serving_model_dir: str) -> None:
    """training.json beside the model card's place in the SavedModel (assets.extra/)."""
    extras = os.path.join(serving_model_dir, assets_extra.DIR)
    tf.io.gfile.makedirs(extras)
    with tf.io.gfile.GFile(os.path.join(extras, assets_extra.TRAINING_SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config = training_config(fn_args.custom_config, fn_args.hyperparameters)
    tf.keras.utils.set_random_seed(config["seed"])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    groups = group_counts(fn_args.train_files)
    counts = class_totals(groups)
    train = input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                     config["batch_size"], training=True,
                     weights=balance.group_weights(groups, config["balance"]))
    validation = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                          config["batch_size"], training=False)

    model = build_model(config)
    best = fit_two_phases(
        model, config, train, validation,
        steps_per_epoch(counts, config["batch_size"], fn_args.train_steps), verbose=2,
        callbacks=[tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir,
                                                  update_freq="epoch")])
    # One pass over the eval split gives the probabilities calibration needs and the
    # features the chest X-ray gate is scaled and thresholded on (models/ood.py); folding the
    # temperature into the head leaves the features before it unchanged.
    with_features = ood.feature_model(model)
    eval_labels, (eval_probabilities, *eval_pooled) = ood.predict_batches(with_features,
                                                                          validation)
    summary = {"config": config, "best_epoch": best.best_epoch + 1,
               "epochs_run": len(best.losses), "eval_loss_per_epoch": best.losses,
               **fold_calibration(model, eval_labels, eval_probabilities)}
    # The gate itself: the trained model's own features of the training split (one pass,
    # no augmentation).
    _, (_, *train_pooled) = ood.predict_batches(with_features, input_fn(
        fn_args.train_files, fn_args.data_accessor, tf_transform_output, config["batch_size"],
        training=False))
    gate = ood.fit(train_pooled, eval_pooled, layer_names=ood.layer_names(model))
    summary["chest_xray_gate"] = gate.summary()

    # save_traces=False: layers are revived from their configs, which makes saving about 10x
    # and Keras loading (TFMA, Grad-CAM) about 2x faster; the signatures are saved in full.
    model.save(fn_args.serving_model_dir, save_format="tf", save_traces=False,
               signatures=export_signatures(model, tf_transform_output, gate))
    # Recorded so that the model card need not load the Keras model only to count them.
    summary["parameters"] = int(model.count_params())
    write_training_summary(summary, fn_args.serving_model_dir)
