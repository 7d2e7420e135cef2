"""Tuning: studies that write every output and resume, pruning, two worker processes on one storage,
a test set that is never touched, and bad input as a one-line error with exit code 2."""

import csv
import importlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

import digitlab
from digitlab import ConfigError, TrainConfig
from digitlab.cli import main
from digitlab.tuning.output import FIGURES
from digitlab.tuning.space import build_space, check_space, config_for, parse_param, read_space_file
from digitlab.tuning.tune import base_config, make_pruner, tune

# small and quick: one or two epochs of a small MLP on 2,000 images (checked on the usual 5,000)
SMALL = ["--train-size", "2000", "--threads", "1"]
QUICK_SPACE = {
    "epochs": {"low": 1, "high": 2},
    "augment": {"value": 0.0},
    "hidden_1": {"low": 16, "high": 64},
    "hidden_2": {"low": 8, "high": 32},
}


def small_base(model: str = "mlp") -> TrainConfig:
    return base_config(model).replace(train_size=2000, threads=1)


def read_trials(folder):
    with open(folder / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def study_rows(database):
    """(number, state, surplus) of every trial in an Optuna SQLite storage, read with sqlite3 itself."""
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT number, state, EXISTS (SELECT 1 FROM trial_user_attributes AS attribute WHERE "
            "attribute.trial_id = trials.trial_id AND attribute.key = 'surplus') FROM trials ORDER BY number"
        ).fetchall()


@pytest.mark.slow
def test_a_study_writes_every_output_and_resumes_to_more_trials(tmp_path, mnist, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.json").write_text(json.dumps(QUICK_SPACE))
    assert main(["tune", "--trials", "4", "--space", "space.json", "--seed", "1", *SMALL]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "tunes" / "mlp"
    for name in ("best.json", "trials.csv", "study.db", *FIGURES):
        assert (folder / name).stat().st_size > 0, name
    lines = [line for line in out.splitlines() if line.startswith("trial ")]
    assert [line.split(":")[0] for line in lines] == ["trial 0", "trial 1", "trial 2", "trial 3"]
    assert all(
        re.search(r"(val [\d.]+% after \d epochs?|pruned after epoch \d).*\d s \| lr=.* \| best [\d.]+%", line)
        for line in lines
    ), lines
    rows = read_trials(folder)
    assert [row["number"] for row in rows] == ["0", "1", "2", "3"]
    best = json.loads((folder / "best.json").read_text())
    complete = [row for row in rows if row["state"] == "complete"]
    assert best["val_accuracy"] == pytest.approx(max(float(row["val_accuracy"]) for row in complete), abs=1e-5)
    config = TrainConfig.from_file(folder / "best.json")
    assert (
        config.out is None
        and config.train_size == 2000
        and config.model_kwargs["hidden"] == [best["params"]["hidden_1"], best["params"]["hidden_2"]]
    )

    assert main(["tune", "--trials", "6", "--space", "space.json", "--seed", "1", *SMALL]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("trial ")] == ["trial 4", "trial 5"]
    assert "6 finished trials" in out and "2 new" in out
    assert [row["number"] for row in read_trials(folder)] == [str(number) for number in range(6)]
    not_params = {"number", "state", "val_accuracy", "epochs_run", "seconds", "started", "worker"}
    params = [tuple(value for name, value in row.items() if name not in not_params) for row in read_trials(folder)]
    assert len(set(params)) == 6  # resuming a seeded study does not replay its first draws

    assert main(["tune", "--trials", "6", "--space", "space.json", *SMALL]) == 0  # already there: nothing to run
    assert "0 new" in capsys.readouterr().out


@pytest.mark.slow
def test_best_json_retrains_and_reports_test_accuracy(tmp_path, mnist):
    result = tune("mlp", 2, base=small_base(), space=QUICK_SPACE, out=tmp_path / "study", dataset=mnist, seed=0)
    retrained = subprocess.run(
        [
            sys.executable,
            "-m",
            "digitlab",
            "train",
            "--config",
            str(result.folder / "best.json"),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert retrained.returncode == 0, retrained.stderr
    assert re.search(r"test accuracy [\d.]+% \(validation [\d.]+%\)", retrained.stdout)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # same config, seed and data: the retrained model's validation accuracy is the trial's
    assert metrics["val_accuracy"] == pytest.approx(result.best_value, abs=1e-9)
    assert metrics["test_accuracy"] > 0.5


def test_an_aggressive_pruner_prunes_trials_early(tmp_path, mnist):
    space = {**QUICK_SPACE, "lr": {"low": 1e-5, "high": 1e-1, "log": True}, "epochs": {"value": 3}}
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    result = tune("mlp", 6, base=small_base(), space=space, pruner=pruner, seed=0, out=tmp_path / "s", dataset=mnist)
    rows = read_trials(result.folder)
    pruned = [row for row in rows if row["state"] == "pruned"]
    assert result.pruned == len(pruned) >= 1 and result.finished == 6
    assert any(int(row["epochs_run"]) < 3 for row in pruned)  # stopped before its last epoch
    assert all(int(row["epochs_run"]) == 3 for row in rows if row["state"] == "complete")


def test_pruners_are_selectable_by_name():
    space = build_space("mlp", {"epochs": {"low": 2, "high": 9}})
    assert isinstance(make_pruner("median", space, base_config()), optuna.pruners.MedianPruner)
    hyperband = make_pruner("hyperband", space, base_config())
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner) and hyperband._max_resource == 9
    assert isinstance(make_pruner("none", space, base_config()), optuna.pruners.NopPruner)
    with pytest.raises(ConfigError, match="unknown pruner 'sometimes'"):
        make_pruner("sometimes", space, base_config())


@pytest.mark.slow
def test_two_processes_on_one_storage_share_the_trials(tmp_path, mnist):
    (tmp_path / "space.json").write_text(json.dumps({**QUICK_SPACE, "epochs": {"low": 2, "high": 3}}))
    command = [
        sys.executable,
        "-m",
        "digitlab",
        "tune",
        "--trials",
        "10",
        "--study",
        "shared",
        "--space",
        "space.json",
        "--storage",
        f"sqlite:///{tmp_path / 'shared.db'}",
        "--pruner",
        "none",
        *SMALL,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    rows = study_rows(tmp_path / "shared.db")
    numbers = [number for number, _, _ in rows]
    assert numbers == list(range(len(rows)))  # unique, no gaps
    assert [number for number, state, _ in rows if state == "COMPLETE"] == list(range(10))
    # a trial started when two workers raced for the last place trains nothing and is marked surplus
    assert all(state == "FAIL" and surplus for _, state, surplus in rows[10:])
    reported = [re.findall(r"^trial (\d+):", out, re.M) for out, _ in outputs]
    assert all(reported), "both workers ran trials"
    assert sorted(int(number) for numbers in reported for number in numbers) == list(range(10))  # each ran once
    assert all("10 finished trials" in out for out, _ in outputs)  # each waited for the other's last trial
    rows = read_trials(tmp_path / "tunes" / "shared")
    assert len(rows) == 10 and len({row["worker"] for row in rows}) == 2


def test_ctrl_c_keeps_the_finished_trials_and_the_same_command_resumes(tmp_path, mnist):
    (tmp_path / "space.json").write_text(json.dumps(QUICK_SPACE))
    command = [sys.executable, "-m", "digitlab", "tune", "--trials", "500", "--space", "space.json", *SMALL]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    table = tmp_path / "tunes" / "mlp" / "trials.csv"
    deadline = time.monotonic() + 120
    while not (table.exists() and len(read_trials(table.parent)) >= 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip().splitlines() == [
        "digitlab: error: interrupted; finished trials are kept in the study: run the same command to resume it"
    ]
    kept = [row for row in read_trials(table.parent) if row["state"] in ("complete", "pruned")]
    assert 2 <= len(kept) < 500
    resumed = subprocess.run(
        [*command[:5], str(len(kept) + 1), *command[6:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(kept) + 1} finished trials" in resumed.stdout and "1 new" in resumed.stdout


def test_threads_in_one_process_share_the_budget(tmp_path, mnist):
    result = tune(
        "mlp", 4, base=small_base(), space=QUICK_SPACE, n_jobs=2, pruner="none", out=tmp_path / "s", dataset=mnist
    )
    numbers = [int(row["number"]) for row in read_trials(result.folder)]
    assert numbers == [0, 1, 2, 3] and result.finished == 4 and result.new == 4


def test_tuning_never_evaluates_the_test_set(tmp_path, mnist, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test set was evaluated while tuning")

    monkeypatch.setattr(importlib.import_module("digitlab.training.train"), "evaluate", refuse)
    result = tune("mlp", 2, base=small_base(), space=QUICK_SPACE, out=tmp_path / "s", dataset=mnist)
    assert result.finished == 2 and 0 < result.best_value <= 1
    run = digitlab.train(small_base().replace(epochs=1), dataset=mnist, save=False, test=False)
    assert run.metrics["test_accuracy"] is None and run.metrics["test"] is None and run.metrics["val_accuracy"]


def test_space_values_become_config_fields():
    base = base_config("mlp")
    config = config_for({"lr": 0.01, "hidden_1": 64, "hidden_2": 32, "augment": 0.5, "dropout": 0.1}, base)
    assert config.model_kwargs == {"hidden": [64, 32]} and config.lr == 0.01 and config.dropout == 0.1
    assert config.augment_rotate == pytest.approx(5.0) and config.augment_translate == pytest.approx(1.0)
    cnn = config_for({"channels": 16, "head": 0}, base_config("cnn"))
    assert cnn.model_kwargs == {"channels": [16, 32, 64], "hidden": 0}
    digitlab.create_model(cnn.model, **cnn.model_arguments())


def test_space_files_in_toml_and_json(tmp_path):
    (tmp_path / "space.toml").write_text(
        "[lr]\nlow = 1e-4\nhigh = 1e-2\nlog = true\n[batch_size]\nchoices = [64, 128]\n[hidden_1]\nvalue = 32\n"
    )
    space = build_space("mlp", read_space_file(tmp_path / "space.toml"))
    assert space["lr"].log and space["batch_size"].choices == (64, 128) and space["hidden_1"].fixed
    assert space["weight_decay"].low == 1e-6  # untouched parameters keep their defaults
    (tmp_path / "space.json").write_text('{"epochs": {"low": 2, "high": 4}}')
    assert build_space("mlp", read_space_file(tmp_path / "space.json"))["epochs"].high == 4


@pytest.mark.parametrize(
    "model, overrides, message",
    [
        ("mlp", {"learning_rate": {"low": 1, "high": 2}}, "unknown parameter 'learning_rate'"),
        ("lenet5", {"dropout": {"low": 0.0, "high": 0.5}}, "unknown parameter 'dropout'"),
        ("mlp", {"lr": {"low": 0.01, "high": 0.001}}, "'lr': empty range"),
        ("mlp", {"epochs": {"low": 3, "high": 3}}, "'epochs': empty range"),
        ("mlp", {"batch_size": {"choices": []}}, "non-empty list"),
        ("mlp", {"lr": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
        ("mlp", {"lr": {"low": "a", "high": 1}}, "needs numeric low and high"),
        ("mlp", {"lr": {"low": 1e-3, "hi": 1}}, "unknown key 'hi'"),
        ("mlp", {"lr": 0.01}, "must be a table"),
        ("mlp", {"batch_size": {"low": 32.5, "high": 64}}, "'batch_size' takes integers"),
        ("mlp", {"dropout": {"low": 0.0, "high": 1.5}}, "'dropout' = 1.5: dropout must be in [0, 1)"),
        ("mlp", {"schedule": {"choices": ["constant", "zigzag"]}}, "unknown schedule 'zigzag'"),
    ],
)
def test_bad_search_spaces_name_the_problem(model, overrides, message):
    with pytest.raises(ConfigError) as caught:
        check_space(build_space(model, overrides), base_config(model))
    assert message in str(caught.value)


def test_a_fixed_value_takes_no_other_keys():
    assert parse_param("hidden_1", {"value": 32}).candidates() == [32]
    with pytest.raises(ConfigError, match="fixed value"):
        parse_param("hidden_1", {"value": 32, "low": 1})


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--space", "space.json"], "unknown parameter 'nope'"),
        (["--space", "empty.toml"], "'lr': empty range (low 0.1 >= high 0.01)"),
        (["--space", "missing.json"], "cannot read space file missing.json"),
        (["--storage", "sqlite:////nonexistent/folder/study.db"], "cannot open storage sqlite:////nonexistent/folder"),
        (
            ["--storage", "postgresql://user:secret@127.0.0.1:1/db"],
            "cannot open storage postgresql://user:***@127.0.0.1:1/db",
        ),
        (["--storage", "not a url"], "cannot open storage not a url"),
        (["--trials", "0"], "trials must be at least 1"),
        (["--grace", "1"], "grace must be a whole number of seconds, at least 2, got 1"),
        (["--study", "../up"], "study name '../up'"),
        (["--val-size", "0"], "tuning needs a validation split"),
        (["--pruner", "sometimes"], "invalid choice: 'sometimes'"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.json").write_text('{"nope": {"low": 1, "high": 2}}')
    (tmp_path / "empty.toml").write_text("[lr]\nlow = 0.1\nhigh = 0.01\n")
    try:
        code = main(["tune", "--trials", "2", "--train-size", "500", *args])
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "secret" not in err, err


@pytest.mark.slow
def test_an_unreachable_storage_stops_the_real_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "tune", "--storage", f"sqlite:///{tmp_path}/no/such/s.db"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("digitlab: error: cannot open storage") and len(result.stderr.splitlines()) == 1


def test_a_study_name_belongs_to_one_model(tmp_path, mnist):
    tune("mlp", 1, base=small_base(), space=QUICK_SPACE, study="mine", out=tmp_path / "s", dataset=mnist)
    with pytest.raises(ConfigError, match="study 'mine' tunes model 'mlp', not 'lenet5'"):
        tune("lenet5", 1, base=small_base("lenet5"), study="mine", out=tmp_path / "s", dataset=mnist)


def test_figures_draw_from_plain_records_and_say_when_there_is_nothing_to_draw():
    from matplotlib.figure import Figure
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from digitlab.figures import tuning as tuneviz

    distributions = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "batch_size": CategoricalDistribution([64, 128]),
        "epochs": IntDistribution(1, 3),
    }
    records = [
        {"number": number, "state": state, "value": value, "params": params, "curve": curve}
        for number, state, value, params, curve in [
            (0, "complete", 0.91, {"lr": 1e-3, "batch_size": 64, "epochs": 2}, {1: 0.85, 2: 0.91}),
            (1, "pruned", 0.40, {"lr": 1e-4, "batch_size": 128, "epochs": 3}, {1: 0.40}),
            (2, "complete", 0.95, {"lr": 1e-2, "batch_size": 128, "epochs": 3}, {1: 0.9, 2: 0.93, 3: 0.95}),
        ]
    ]
    figures = [
        tuneviz.optimization_history(records),
        tuneviz.parallel_coordinates(records, distributions),
        tuneviz.learning_curves(records),
        tuneviz.param_importances({"lr": 0.8, "batch_size": 0.2}),
    ]
    assert all(isinstance(figure, Figure) and figure.axes for figure in figures)
    history_axes = figures[0].axes[0]
    assert history_axes.lines[0].get_ydata().tolist() == [0.91, 0.95, 0.95]  # the best so far, as a step line
    empty = [
        tuneviz.optimization_history(records[1:2]),
        tuneviz.parallel_coordinates([], distributions),
        tuneviz.learning_curves([]),
        tuneviz.param_importances("needs at least 3 complete trials"),
    ]
    assert all(figure.axes[0].texts and not figure.axes[0].lines for figure in empty)
