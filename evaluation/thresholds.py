"""The Evaluator's blessing thresholds: set in the eval config, and stated in words.

pipeline.eval_config places two thresholds on the whole test split: a lower bound on COVID-19
recall, and on macro ROC-AUC a lower bound plus an allowed drop against the last blessed
model. With runtime parameters the values are known only when the Evaluator runs, so
`apply` rewrites exactly those thresholds in a config built with other values.
"""
import tensorflow_model_analysis as tfma

# Names of the three thresholds as pipeline settings, runtime parameters and exec properties.
THRESHOLD_KEYS = ("min_covid_recall", "min_macro_auc", "max_regression")
# TFMA compares changes with a strict inequality: the epsilon lets a drop of exactly
# max_regression pass.
CHANGE_EPSILON = 1e-10


def blessing_rule(min_covid_recall: float, min_macro_auc: float, max_regression: float) -> str:
    return (f"COVID-19 recall >= {min_covid_recall} and macro ROC-AUC >= "
            f"{min_macro_auc} on the test split, and no drop of more than "
            f"{max_regression} in macro ROC-AUC against the last blessed model")


def apply(config: tfma.EvalConfig, min_covid_recall: float, min_macro_auc: float,
          max_regression: float) -> tfma.EvalConfig:
    """A copy of `config` with the COVID-19 recall floor and the macro AUC thresholds set."""
    result = tfma.EvalConfig()
    result.CopyFrom(config)
    found = set()
    for spec in result.metrics_specs:
        for metric in spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                threshold = per_slice.threshold
                if metric.class_name == "Recall":
                    threshold.value_threshold.lower_bound.value = min_covid_recall
                    found.add("recall")
                elif metric.class_name == "AUC" and spec.aggregate.macro_average:
                    threshold.value_threshold.lower_bound.value = min_macro_auc
                    threshold.change_threshold.absolute.value = -max_regression - CHANGE_EPSILON
                    found.add("macro_auc")
    if found != {"recall", "macro_auc"}:
        raise ValueError(f"the eval config lacks the blessing thresholds "
                         f"{sorted({'recall', 'macro_auc'} - found)}")
    return result
