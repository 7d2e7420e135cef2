"""The doctor: the checkup of a finished run (curves, insides, answers), what it prints and its JSON,
the learning-rate range test, suspect labels, bad input, and training that speaks up at chance."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import digitlab
from digitlab import TrainConfig
from digitlab.cli import main
from digitlab.data.fetch import data_root
from digitlab.runs.checkup import Commands, Finding, Findings, Probes
from digitlab.runs.checkup.curves import history_findings
from digitlab.runs.checkup.outputs import confident_answers
from digitlab.training.recipes import apply_recipe

FINDING_KEYS = {"check", "severity", "message", "evidence", "fix"}
SUSPECT_KEYS = {"split", "index", "label", "suggested", "score"}
COMMANDS = Commands("runs/x", "mlp")
QUICK = Probes(val_images=1000, train_images=3000, real_world=0)


def epochs(*records) -> list[dict]:
    """A history of (train_loss, val_loss, train_accuracy, val_accuracy) per epoch."""
    return [
        {"epoch": n, "train_loss": tl, "val_loss": vl, "train_accuracy": ta, "val_accuracy": va}
        for n, (tl, vl, ta, va) in enumerate(records, 1)
    ]


def checks(findings) -> set[str]:
    return {finding.check for finding in findings if finding.alarming}


def test_a_history_at_chance_is_named_chance_and_a_falling_one_gets_no_warning():
    uniform = math.log(10)
    stuck = epochs((uniform + 0.02, uniform, 0.10, 0.099), (uniform + 0.01, uniform, 0.10, 0.101))
    assert "chance" in checks(history_findings(stuck, 10, 1e-3, "adam", COMMANDS))
    healthy = epochs((0.55, 0.29, 0.84, 0.92), (0.25, 0.24, 0.93, 0.93), (0.19, 0.20, 0.94, 0.94))
    assert checks(history_findings(healthy, 10, 1e-3, "adam", COMMANDS)) == set()


def test_a_loss_that_rose_is_a_learning_rate_too_high_and_a_slow_one_too_low():
    rose = epochs((2.56, 2.34, 0.10, 0.10), (2.33, 2.32, 0.10, 0.11))
    found = {finding.check: finding for finding in history_findings(rose, 10, 0.3, "adam", COMMANDS)}
    assert found["learning-rate-high"].severity == "problem"
    assert "--lr 0.03" in found["learning-rate-high"].fix  # a tenth of the rate, from the run's own config
    slow = epochs((2.27, 2.22, 0.18, 0.25), (2.16, 2.09, 0.33, 0.40), (2.02, 1.95, 0.45, 0.49))
    assert "learning-rate-low" in checks(history_findings(slow, 10, 1e-5, "adam", COMMANDS))
    # the same slow curve at a usual rate is only a note: more epochs may be all it needs
    assert "learning-rate-low" not in checks(history_findings(slow, 10, 1e-3, "adam", COMMANDS))


def test_findings_sort_worst_first_and_give_the_json_shape():
    findings = Findings(
        [
            Finding("a", "info", "note", {}),
            Finding("b", "problem", "bad", {"x": 1}, "fix it"),
            Finding("c", "warning", "hm", {}),
        ]
    )
    assert [finding.severity for finding in findings] == ["problem", "warning", "info"]
    assert [set(item) for item in findings.to_dict()["findings"]] == [FINDING_KEYS] * 3
    with pytest.raises(ValueError, match="severity"):
        Finding("a", "fatal", "x", {})


@pytest.mark.slow
def test_confident_answers_count_the_confident_joint_as_cleanlab_does():
    count = pytest.importorskip("cleanlab.count")
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 4
    probabilities = torch.softmax(3 * torch.randn(600, 4, generator=generator) + 2 * torch.eye(4)[labels], 1)
    answer = confident_answers(probabilities, labels)
    ours = torch.zeros(4, 4, dtype=torch.long)
    for label, said in zip(labels[answer >= 0].tolist(), answer[answer >= 0].tolist(), strict=True):
        ours[label, said] += 1
    theirs = count.compute_confident_joint(labels.numpy(), probabilities.double().numpy(), calibrate=False)
    assert ours.tolist() == theirs.tolist()


@pytest.mark.slow
def test_a_run_at_chance_is_named_chance_with_its_evidence(mnist):
    run = digitlab.train(TrainConfig(lr=0.3, epochs=1, train_size=5000), dataset=mnist, save=False, test=False)
    findings = run.doctor(probes=QUICK)
    chance = [finding for finding in findings if finding.check == "chance"]
    assert chance and chance[0].severity == "problem"
    assert chance[0].evidence["validation_accuracy"] < 0.15
    assert {"learning-rate-high", "dead-units"} <= findings.checks()


@pytest.mark.slow
def test_a_healthy_run_gets_no_warning(mnist):
    config = apply_recipe(TrainConfig(), "fast")  # the seed MLP at 96% in seconds
    run = digitlab.train(config, dataset=mnist, save=False, test=False)
    findings = run.doctor(probes=Probes(val_images=1000, train_images=3000, real_world=3))
    assert findings.alarms() == [], findings.lines()
    assert {"input-scale", "dead-units", "gradient-flow", "calibration", "confusions", "real-world-gap"} <= {
        finding.check for finding in findings
    }
    assert "<img" in findings._repr_html_()  # Jupyter shows the findings beside their pictures


@pytest.fixture(scope="module")
def small_run(mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("doctor") / "run"
    digitlab.train(TrainConfig(epochs=1, lr=5e-3, train_size=3000, out=str(folder)), dataset=mnist)
    return folder


@pytest.mark.slow
def test_doctor_run_json_gives_findings_and_writes_no_report(small_run, capsys):
    assert main(["doctor", str(small_run), "--json", "--real-world", "0"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert list(answer) == ["findings"] and answer["findings"]
    assert all(set(finding) == FINDING_KEYS for finding in answer["findings"])
    assert all(finding["severity"] in ("info", "warning", "problem") for finding in answer["findings"])
    assert not (small_run / "doctor").exists()


@pytest.mark.slow
def test_doctor_run_writes_its_report_beside_the_run(small_run, capsys):
    assert main(["doctor", str(small_run), "--real-world", "0"]) == 0
    out = capsys.readouterr().out
    assert "report written to" in out and (small_run / "doctor" / "index.html").is_file()
    page = (small_run / "doctor" / "index.html").read_text()
    assert page.count("<img") >= 3 and json.loads((small_run / "doctor" / "findings.json").read_text())["findings"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("digitlab: error:"), err
    return err


@pytest.mark.slow
def test_doctor_refuses_a_run_folder_without_history(small_run, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "model.safetensors"):
        (old / name).write_bytes((small_run / name).read_bytes())
    metrics = json.loads((small_run / "metrics.json").read_text())
    del metrics["history"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    assert main(["doctor", str(old)]) == 2
    assert "no training history" in one_error_line(capsys)


@pytest.mark.slow
def test_doctor_refuses_a_run_of_other_files_and_a_dataset_not_fetched(small_run, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("metrics.json", "model.safetensors"):
        (other / name).write_bytes((small_run / name).read_bytes())
    config = json.loads((small_run / "config.json").read_text())
    config["dataset"]["sha256"] = dict.fromkeys(config["dataset"]["sha256"], "0" * 64)
    (other / "config.json").write_text(json.dumps(config))
    assert main(["doctor", str(other)]) == 2
    assert "other mnist files" in one_error_line(capsys)
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "empty"))
    assert main(["doctor", str(small_run)]) == 2
    assert "digitlab data fetch" in one_error_line(capsys)
    assert main(["doctor", "data", "--json"]) == 2
    assert "digitlab data fetch" in one_error_line(capsys)


def test_doctor_data_without_cleanlab_names_the_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab now raises ImportError
    assert main(["doctor", "data"]) == 2
    assert "pip install 'digitlab[doctor]'" in one_error_line(capsys)


def test_doctor_run_and_data_options_do_not_mix(capsys):
    assert main(["doctor", "some/run", "--dataset", "mnist"]) == 2
    assert "doctor data" in one_error_line(capsys)
    assert main(["doctor", "no/such/run"]) == 2
    assert "no run folder" in one_error_line(capsys)


@pytest.mark.slow
def test_lr_find_names_a_range_below_the_blow_up(mnist, capsys):
    from digitlab.doctor import lr_find

    found = lr_find(TrainConfig(train_size=20_000), mnist, steps=120)
    assert found.low < found.suggested <= found.high < found.lowest
    assert found.low < 1e-2 and found.high < 0.1  # Adam's MLP blows up well before 0.1 (the zoo's 100× fault)
    assert main(["lr-find", "--train-size", "5000", "--steps", "40", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {"suggested", "range", "steepest", "curve"} <= set(answer) and len(answer["range"]) == 2
    assert main(["lr-find", "--start", "1", "--end", "0.1"]) == 2


@pytest.mark.slow
def test_doctor_data_suspects_point_into_the_idx_files(tmp_path):
    pytest.importorskip("cleanlab")
    from digitlab.data.datasets import read_idx
    from digitlab.doctor import examine_data, write_data_report

    quick = TrainConfig(epochs=1, batch_size=256, lr=3e-3, val_size=0, device="cpu")  # the fused MLP: seconds
    checkup = examine_data("mnist", quick, folds=2)
    answer = checkup.to_dict()
    assert answer["suspects"] and all(set(suspect) == SUSPECT_KEYS for suspect in answer["suspects"])
    scores = [suspect["score"] for suspect in answer["suspects"]]
    assert scores == sorted(scores, reverse=True)  # most suspect first
    folder = data_root() / "mnist"
    labels = {
        "train": read_idx(folder / "train-labels-idx1-ubyte"),
        "test": read_idx(folder / "t10k-labels-idx1-ubyte"),
    }
    for suspect in answer["suspects"][:50]:
        assert labels[suspect["split"]][suspect["index"]] == suspect["label"] != suspect["suggested"]
    assert {"train", "test"} == {suspect["split"] for suspect in answer["suspects"]}
    index = write_data_report(checkup, tmp_path / "report")
    assert "<img" in index.read_text() and json.loads((tmp_path / "report" / "findings.json").read_text())["suspects"]


@pytest.mark.slow
def test_training_that_ends_at_chance_says_so_and_exits_0(tmp_path):
    command = [sys.executable, "-m", "digitlab", "train", "--lr", "0.3", "--epochs", "1", "--train-size", "3000"]
    done = subprocess.run([*command, "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if line.startswith("digitlab: warning:")]
    assert warning and "chance level" in warning[0] and f"digitlab doctor {tmp_path / 'run'}" in warning[0]


def test_the_doctor_notebook_is_committed_with_findings_beside_their_pictures():
    import nbformat

    path = Path(__file__).resolve().parents[1] / "notebooks" / "doctor.ipynb"
    code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "run every cell before committing"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    pages = [output["data"]["text/html"] for output in outputs if "text/html" in output.get("data", {})]
    assert len(pages) >= 2 and all("data:image/png;base64," in page for page in pages)
