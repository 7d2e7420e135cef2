"""Tuning survives a worker killed with SIGKILL mid-trial: the trial's heartbeat stops, a worker still
running fails it after the grace period and retries the same parameters, the study ends with the
requested number of complete trials and the same best trial as a study nobody killed. Checked with
SQLite and with a real PostgreSQL server started here on 127.0.0.1."""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from optuna.trial import TrialState

from digitlab.tuning.study import first_heartbeat, open_storage, open_study
from digitlab.tuning.tune import base_config, tune

GRACE = 3  # seconds; heartbeats every second
RATES = (1e-3, 3e-3, 1e-2)  # the three trials, queued so that every study runs the same ones
# lr searched, everything else fixed: 2 epochs of 6,000 images at batch 64, a fraction of a second
SPACE = {
    "lr": {"low": 1e-4, "high": 3e-2, "log": True},
    "epochs": {"value": 2},
    "batch_size": {"value": 64},
    "schedule": {"value": "constant"},
    "weight_decay": {"value": 1e-6},
    "augment": {"value": 0.0},
    "dropout": {"value": 0.0},
    "hidden_1": {"value": 32},
    "hidden_2": {"value": 16},
}
BASE = ["--train-size", "6000", "--threads", "1"]


def queued_study(url: str):
    study = open_study(url, "crash", "mlp")
    for rate in RATES:
        study.enqueue_trial({"lr": rate})
    return study


@pytest.fixture(scope="module")
def undisturbed(mnist, tmp_path_factory):
    """{lr: validation accuracy} of the three trials in a study that nobody killed."""
    folder = tmp_path_factory.mktemp("undisturbed")
    url = f"sqlite:///{folder / 'study.db'}"
    queued_study(url)
    base = base_config().replace(train_size=6000, threads=1)
    tune(
        "mlp", len(RATES), base=base, space=SPACE, storage=url, study="crash", pruner="none", out=folder, dataset=mnist
    )
    trials = open_study(url, "crash", "mlp").get_trials(states=(TrialState.COMPLETE,))
    return {trial.params["lr"]: trial.value for trial in trials}


def run_with_a_killed_worker(url: str, folder) -> tuple[int, str, list]:
    """Two workers share the study; the first seen running a trial is killed (SIGKILL) in that trial.

    Returns the killed trial's number, the survivor's output and the study's trials.
    """
    queued_study(url)
    (folder / "space.json").write_text(json.dumps(SPACE))
    command = [sys.executable, "-m", "digitlab", "tune", "--trials", str(len(RATES)), "--study", "crash"]
    command += ["--storage", url, "--space", str(folder / "space.json"), "--pruner", "none", "--grace", str(GRACE)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [*command, *BASE, "--out", str(folder / f"worker{number}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for number in range(2)
    ]
    try:
        killed, victim = kill_mid_trial(workers, open_study(url, "crash", "mlp"))
        (survivor,) = [worker for worker in workers if worker is not victim]
        out, err = survivor.communicate(timeout=180)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert survivor.returncode == 0, err
    return killed, out, open_study(url, "crash", "mlp").get_trials()


def kill_mid_trial(workers: list[subprocess.Popen], study) -> tuple[int, subprocess.Popen]:
    """Wait for a worker's running trial, freeze that worker (waiting until it has stopped, so that it cannot
    finish the trial after the check), and kill it if the trial still runs (else let it go on). Returns the
    killed trial's number and the worker. The other worker cannot have left: a running trial of the study
    keeps it waiting, and the killed one is retried."""
    by_pid = {f":{worker.pid}": worker for worker in workers}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.poll() is None, f"a worker ended before any trial could be killed: {worker.communicate()}"
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            owner = str(trial.user_attrs.get("worker", ""))
            victim = next((worker for pid, worker in by_pid.items() if owner.endswith(pid)), None)
            if victim is None:
                continue
            victim.send_signal(signal.SIGSTOP)
            os.waitpid(victim.pid, os.WUNTRACED)  # the signal lands later: wait until the worker has stopped
            if study.get_trials()[trial.number].state == TrialState.RUNNING:
                victim.send_signal(signal.SIGKILL)
                victim.communicate()
                return trial.number, victim
            victim.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("no worker ran a trial")


def check_the_study(killed: int, out: str, trials: list, undisturbed: dict) -> None:
    assert trials[killed].state == TrialState.FAIL  # failed by the survivor, after the heartbeat stopped
    retries = [trial for trial in trials if trial.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params  # the same parameters, run again
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    assert sorted(trial.params["lr"] for trial in complete) == sorted(RATES)
    assert f"study crash: {len(RATES)} finished trials" in out
    # every trial, and so the best, is what it was in the study nobody killed
    assert {trial.params["lr"]: trial.value for trial in complete} == undisturbed
    best = max(complete, key=lambda trial: trial.value)
    assert best.params["lr"] == max(undisturbed, key=undisturbed.get)
    assert f"best validation accuracy {best.value:.2%} (trial {best.number})" in out


@pytest.mark.slow
def test_sqlite_a_worker_killed_mid_trial_is_retried_and_the_best_is_unchanged(tmp_path, undisturbed):
    killed, out, trials = run_with_a_killed_worker(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    check_the_study(killed, out, trials, undisturbed)


@pytest.mark.slow
def test_a_trial_whose_worker_dies_before_optunas_first_beat_is_still_failed_and_retried(tmp_path):
    """Optuna never fails a running trial that has no heartbeat; a worker killed in its trial's first instant
    (before the heartbeat thread's first beat, likelier on a busy machine) left the study waiting for ever.
    The objective beats once itself before any work, so the trial is failed after the grace period."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(url, "early", "mlp", grace=2)
    beaten, silent = study.ask(), study.ask()  # both RUNNING, as if their workers had died at once
    first_heartbeat(beaten)
    deadline = time.monotonic() + 30
    while study.get_trials()[beaten.number].state == TrialState.RUNNING and time.monotonic() < deadline:
        optuna_fail_stale(study)
        time.sleep(0.2)
    states = [trial.state for trial in open_study(url, "early", "mlp", grace=2).get_trials()]
    assert states[beaten.number] == TrialState.FAIL  # failed (and queued again) after the grace period
    assert states[silent.number] == TrialState.RUNNING  # what every trial without a first beat stayed
    assert open_storage(url, grace=2).get_heartbeat_interval() == 1


def optuna_fail_stale(study) -> None:
    from optuna.storages import fail_stale_trials

    fail_stale_trials(study)


def postgres_binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@pytest.fixture
def postgres():
    """A PostgreSQL server of its own on 127.0.0.1 (trust auth, a fresh data folder); yields its URL.

    PostgreSQL refuses to run as root, so under root (CI) it runs as the `postgres` user.
    """
    binaries = postgres_binaries()
    assert binaries is not None  # the `postgres` marker (conftest.py) skipped or failed the test before
    as_user: list[str] = []
    data = tempfile.mkdtemp(prefix="digitlab-pg-")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(data, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(
        [*as_user, f"{binaries}/initdb", "-D", data, "-U", "tuner", "--auth=trust", "--no-sync"], **quiet, check=True
    )
    server = subprocess.Popen(
        [*as_user, f"{binaries}/postgres", "-D", data, "-p", str(port), "-h", "127.0.0.1", "-k", data, "-F"], **quiet
    )
    try:
        for _ in range(300):
            ready = subprocess.run([f"{binaries}/pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
            if ready.returncode == 0:
                break
            assert server.poll() is None, server.communicate()
            time.sleep(0.1)
        subprocess.run(
            [f"{binaries}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "tuner", "digitlab"], check=True
        )
        yield f"postgresql://tuner@127.0.0.1:{port}/digitlab"
    finally:
        with open(os.path.join(data, "postmaster.pid")) as pid_file:  # runuser passes no signal on
            os.kill(int(pid_file.readline()), signal.SIGINT)  # fast shutdown
        server.communicate(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_a_worker_killed_mid_trial_is_retried_and_the_best_is_unchanged(tmp_path, postgres, undisturbed):
    killed, out, trials = run_with_a_killed_worker(postgres, tmp_path)
    check_the_study(killed, out, trials, undisturbed)
