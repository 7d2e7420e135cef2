"""The checkup of a finished run, without training: its curves, its insides and its answers
(`examine`), the findings it returns (`Finding`, `Findings`) and the page that shows them beside their
pictures (`write_checkup`). `Run.doctor()` and `digitlab doctor RUN` call it.
"""

from .examine import Patient, Probes, examine
from .findings import Commands, Finding, Findings
from .report import write_checkup

__all__ = ["Commands", "Finding", "Findings", "Patient", "Probes", "examine", "write_checkup"]
