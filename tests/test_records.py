"""The record recipes, bf16 autocast, ensembles and test-time augmentation (issue 17). No timings here:
benchmarks/records.py measures them."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import digitlab
from digitlab import TrainConfig
from digitlab.config import resolve_precision
from digitlab.data.augment import transform_batch
from digitlab.errors import ConfigError, RunError
from digitlab.inference.evaluate import TTA_VIEWS, TestTimeAugmented, evaluate
from digitlab.models.nets import count_parameters, create_model
from digitlab.runs.ensemble import build_ensemble
from digitlab.runs.run import load_model, save_model
from digitlab.training.recipes import RECIPES, apply_recipe
from test_cli import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def small_val():
    """MNIST with a 500-image validation split: enough for a few steps of every recipe."""
    return digitlab.load_dataset("mnist", val_size=500)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("model", digitlab.list_models())
def test_every_recipe_learns_in_a_few_steps(recipe, model, small_val):
    # 32 steps of 64: every recipe x model measured 0.95..1.96 mean train loss and 52..89% validation
    # accuracy. A model that learns nothing scores ln 10 = 2.30 and about 10% (one class: 9..11% here).
    config = apply_recipe(TrainConfig(model=model), recipe).replace(
        epochs=1, train_size=32 * 64, batch_size=64, val_size=500, teacher=None
    )
    run = digitlab.train(config, dataset=small_val, save=False, test=False)
    [record] = run.metrics["history"]
    assert record["train_loss"] < 2.1 and record["val_accuracy"] > 0.4
    assert run.metrics["precision"] in ("fp32", "bf16") or run.metrics["precision"].startswith("fp32 (")


def test_bf16_falls_back_to_fp32_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    dtype, note = resolve_precision("bf16", torch.device("cpu"))
    assert dtype is None and note == "fp32 (this CPU has no AMX or AVX-512 BF16)"
    assert resolve_precision("fp32", torch.device("cpu")) == (None, "fp32")
    with pytest.raises(ConfigError, match="unknown precision"):
        TrainConfig(precision="fp16")


def test_bf16_training_records_its_precision_and_keeps_fp32_weights(small_val):
    config = TrainConfig(model="cnn-cpu", precision="bf16", epochs=1, train_size=128, val_size=500)
    run = digitlab.train(config, dataset=small_val, save=False, test=False)
    expected = resolve_precision("bf16", torch.device("cpu"))[1]
    assert run.metrics["precision"] == expected
    assert all(parameter.dtype == torch.float32 for parameter in run.model.parameters())


def test_betas_reach_the_optimizer_and_are_checked():
    from digitlab.training.train import build

    _, optimizer = build(TrainConfig(model="cnn-cpu", optimizer="adam", betas=[0.7, 0.9]))
    assert optimizer.param_groups[0]["betas"] == (0.7, 0.9)
    with pytest.raises(ConfigError, match="betas"):
        TrainConfig(betas=[0.9])


def test_cnn_cpu_is_the_gpu_recipes_net_by_default():
    model = create_model("cnn-cpu")
    assert count_parameters(model) == 215_194
    convolutions = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convolutions] == [(1, 24, (5, 5)), (24, 32, (3, 3))]
    assert getattr(model, "prefers_channels_last", False)


def shifted(images: torch.Tensor, right: int, down: int) -> torch.Tensor:
    """`images` moved by whole pixels with zeros coming in: the shift views written without grid_sample."""
    padded = F.pad(images, (2, 2, 2, 2))
    height, width = images.shape[-2:]
    return padded[..., 2 - down : 2 - down + height, 2 - right : 2 - right + width]


def seven_views_mean(model, images: torch.Tensor) -> torch.Tensor:
    """The mean of the probabilities of the seven views TTA promises: as is, one pixel right, left, down
    and up, and turned by -8 and +8 degrees."""
    views = [images, *(shifted(images, *step) for step in ((1, 0), (-1, 0), (0, 1), (0, -1)))]
    views += [transform_batch(images, rotate=degrees) for degrees in (-8, 8)]
    with torch.no_grad():
        return torch.stack([model(view).softmax(1) for view in views]).mean(0)


def test_tta_is_the_mean_of_its_seven_views_probabilities():
    # a TTA that averaged logits, dropped or repeated a view, or shifted the wrong way would differ by
    # far more than float rounding (a shift of one pixel moves most probabilities by > 1e-3)
    assert sorted(TTA_VIEWS) == sorted(
        [(0, (0, 0)), (0, (1, 0)), (0, (-1, 0)), (0, (0, 1)), (0, (0, -1)), (-8, (0, 0)), (8, (0, 0))]
    )
    torch.manual_seed(0)
    model = create_model("cnn-cpu").eval()
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits = TestTimeAugmented(model)(images)
    torch.testing.assert_close(logits.exp(), seven_views_mean(model, images), rtol=1e-5, atol=1e-6)
    identity = TestTimeAugmented(model, views=[(0, (0, 0))])(images)
    torch.testing.assert_close(identity, model(images).log_softmax(1))


def _mlp_run(path, mnist, seed: int):
    return digitlab.train(TrainConfig(epochs=1, lr=5e-3, seed=seed, out=str(path)), dataset=mnist)


@pytest.fixture(scope="module")
def two_runs(mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return _mlp_run(folder / "a", mnist, 1), _mlp_run(folder / "b", mnist, 2)


def test_an_ensemble_is_a_run_that_evaluate_predict_and_export_accept(two_runs, mnist, tmp_path):
    ensemble = build_ensemble([run.path for run in two_runs], out=tmp_path / "ens")
    metrics = ensemble.metrics
    assert metrics["val_accuracy"] > 0.9 and metrics["tta"]["test_accuracy"] > 0.9
    assert [member["run"] for member in metrics["members"]] == [str(run.path) for run in two_runs]
    loaded = digitlab.load_run(tmp_path / "ens")
    assert loaded.config.model == "ensemble" and "ensemble" not in digitlab.list_models()
    assert loaded.evaluate("test")["accuracy"] == pytest.approx(metrics["test_accuracy"])
    # the average of the members' probabilities, exactly
    images = mnist.test.images[:50].float() / 255
    with torch.no_grad():
        mean = torch.stack([run.model(images).softmax(1) for run in two_runs]).mean(0)
        torch.testing.assert_close(loaded.model(images).exp(), mean, rtol=1e-5, atol=1e-6)
    result = run_cli("evaluate", str(tmp_path / "ens"), "--tta", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["tta"] is True and answer["test_accuracy"] == pytest.approx(metrics["tta"]["test_accuracy"])
    picture = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(255 - mnist.test.images[0, 0].numpy()).resize((112, 112)).save(picture)
    for flags in ([], ["--tta"]):
        result = run_cli("predict", str(tmp_path / "ens"), str(picture), "--json", *flags)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)[0]["label"] == str(int(mnist.test.labels[0]))
    assert run_cli("export", str(tmp_path / "ens")).returncode == 0


def test_ensemble_model_file_round_trips():
    torch.manual_seed(0)
    members = [{"name": "mlp", "kwargs": {}}, {"name": "cnn-cpu", "kwargs": {"channels": [8, 16]}}]
    model = create_model("ensemble", members=members).eval()
    images = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(model.head(model.penultimate(images)), model(images), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="at least one member"):
        create_model("ensemble")


def test_ensemble_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = create_model("ensemble", members=[{"name": "mlp", "kwargs": {}}] * 2).eval()
    save_model(model, tmp_path / "m.safetensors")
    loaded, _ = load_model(tmp_path / "m.safetensors")
    images = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(images), loaded(images))


@pytest.mark.slow
def test_ensemble_refuses_runs_of_different_datasets_naming_both(two_runs, tmp_path):
    other = tmp_path / "fashion"
    shutil.copytree(two_runs[1].path, other)
    saved = json.loads((other / "config.json").read_text())
    saved["dataset"]["name"] = "fashion-mnist"
    (other / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RunError, match=f"{two_runs[0].path} and {other}: .*different datasets"):
        build_ensemble([two_runs[0].path, other], save=False)
    result = run_cli("ensemble", str(two_runs[0].path), str(other), "--out", str(tmp_path / "e"))
    assert_one_line_error(result, str(two_runs[0].path), str(other), "different datasets")
    saved["dataset"]["name"] = "mnist"
    saved["dataset"]["classes"] = list("abcdefghij")
    (other / "config.json").write_text(json.dumps(saved))
    result = run_cli("ensemble", str(two_runs[0].path), str(other))
    assert_one_line_error(result, str(other), "different class lists")


@pytest.mark.slow
def test_ensemble_names_a_run_whose_model_file_is_missing_or_corrupt(two_runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(two_runs[1].path, broken)
    (broken / "model.safetensors").write_bytes(b"not a model")
    result = run_cli("ensemble", str(two_runs[0].path), str(broken))
    assert_one_line_error(result, str(broken / "model.safetensors"))
    (broken / "model.safetensors").unlink()
    result = run_cli("ensemble", str(two_runs[0].path), str(broken))
    assert_one_line_error(result, str(broken / "model.safetensors"), "missing")
    assert_one_line_error(run_cli("ensemble", str(two_runs[0].path)), "at least two runs")


def test_evaluate_with_tta_scores_the_seven_views_mean(two_runs, mnist):
    model = two_runs[0].model.eval()
    augmented = evaluate(model, mnist.val, mnist.classes, tta=True)
    mean = seven_views_mean(model, mnist.val.images.float() / 255)
    expected = (mean.argmax(1) == mnist.val.labels).double().mean().item()
    assert augmented["accuracy"] == pytest.approx(expected, abs=1.5 / len(mnist.val))  # a near tie may round either way
    assert augmented["count"] == len(mnist.val)
