"""The doctor's room for what needs training: the learning-rate range test (`lr_find`), suspect labels
by cross-validated confident learning and the rest of the dataset's checkup (`examine_data`). The
checkup of a finished run, which trains nothing, is `Run.doctor()` (digitlab.runs.checkup).
"""

from .data import DataCheckup, examine_data, write_data_report
from .labels import Suspect, label_suspects, out_of_sample_probabilities
from .lr_find import RateRange, lr_find

__all__ = [
    "DataCheckup",
    "RateRange",
    "Suspect",
    "examine_data",
    "label_suspects",
    "lr_find",
    "out_of_sample_probabilities",
    "write_data_report",
]
