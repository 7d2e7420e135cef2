"""Reading digits with a trained model: metrics (`evaluate`), pictures to answers (`predict`), "not a digit"
(`ood`), whole numbers (`numbers`, `segmenter`), why a model decides (`explain`) and the real-world suite
(`realworld`).

The functions named like their modules (`evaluate`, `predict`, `explain`) stay in them; the package's
face is `digitlab.predict` and friends.
"""

from .evaluate import accuracy, classification_metrics, confusion_matrix, predict_logits, robustness
from .explain import Explanation, explain_picture, integrated_gradients
from .numbers import read_number, read_numbers
from .ood import Detector, fit_detector
from .predict import Prediction
from .realworld import CONDITIONS, render_suite, score_suite

__all__ = [
    "CONDITIONS",
    "Detector",
    "Explanation",
    "Prediction",
    "accuracy",
    "classification_metrics",
    "confusion_matrix",
    "explain_picture",
    "fit_detector",
    "integrated_gradients",
    "predict_logits",
    "read_number",
    "read_numbers",
    "render_suite",
    "robustness",
    "score_suite",
]
