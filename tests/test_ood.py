"""'Not a digit': the out-of-distribution detector, its storage in model files, and its answers in
predict, the CLI and the web API. The real-data tests use seed_run (conftest: the seed MLP, one
epoch), whose training fitted a detector."""

import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy import ndimage

import digitlab
from digitlab.cli import main
from digitlab.errors import RunError
from digitlab.inference.ood import RIDGE, Detector, Gaussians, Observed, auroc, blank_noise, observe, random_strokes
from digitlab.models.nets import create_model, list_models
from digitlab.runs.run import load_model, read_model_metadata, save_model
from digitlab.serving.app import create_app
from scans import png_bytes


@pytest.fixture(scope="session")
def fashion():
    return digitlab.load_dataset("fashion-mnist")


@pytest.mark.parametrize("name", list_models())
def test_head_of_penultimate_is_forward(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    images = torch.rand(5, 1, 28, 28)
    activations = model.penultimate(images)
    assert activations.ndim == 2 and activations.shape[0] == 5
    torch.testing.assert_close(model.head(activations), model(images), rtol=0, atol=0)


def test_auroc_matches_pairwise_definition():
    inliers, outliers = torch.tensor([0.1, 0.4, 0.4, 0.9]), torch.tensor([0.4, 1.0, 0.05])
    pairs = [(o > i) + 0.5 * (o == i) for o in outliers.tolist() for i in inliers.tolist()]
    assert auroc(inliers, outliers) == pytest.approx(sum(pairs) / len(pairs))


def test_outlier_generators_are_images_and_seeded():
    strokes, noise = random_strokes(8, seed=3), blank_noise(8, seed=3)
    assert strokes.shape == noise.shape == (8, 1, 28, 28) and strokes.dtype == noise.dtype == torch.uint8
    assert torch.equal(strokes, random_strokes(8, seed=3)) and not torch.equal(strokes, random_strokes(8, seed=4))
    assert (strokes.flatten(1) > 128).sum(1).min() >= 10  # every scribble has ink
    # each is one polyline between vertices in the middle of the frame: one piece, and no ink in the outer
    # 2 px. Segments drawn along a wrong direction (end * start for end - start) run off to the edges apart.
    many = random_strokes(100, seed=5)[:, 0].numpy()
    assert not many[:, :2].any() and not many[:, -2:].any() and not many[:, :, :2].any() and not many[:, :, -2:].any()
    assert all(ndimage.label(scribble > 0, np.ones((3, 3)))[1] == 1 for scribble in many)
    # vertices anywhere in the middle: on average the ink is centred at pixel index 13.5 (pixel i covers
    # i..i+1). Pixels centred at i - 0.5 would move every scribble one pixel right and down.
    ink = random_strokes(1000, seed=5)[:, 0].double()
    index = torch.arange(28, dtype=torch.double)
    mass = ink.sum((1, 2))
    assert abs(float(((ink.sum(2) * index).sum(1) / mass).mean()) - 13.5) < 0.4
    assert abs(float(((ink.sum(1) * index).sum(1) / mass).mean()) - 13.5) < 0.4
    assert noise.float().mean() < 0.3 * 255


def test_training_fits_a_detector_that_rejects_fashion_and_keeps_digits(seed_run, mnist, fashion):
    detector = seed_run.ood
    assert detector is not None and detector.threshold > 0
    digits = detector.rejects(detector.score(observe(seed_run.model, mnist.test.images)))
    clothes = detector.score(observe(seed_run.model, fashion.test.images))
    assert digits.double().mean() <= 0.02  # at least 98% of MNIST test digits accepted
    assert detector.rejects(clothes).double().mean() >= 0.9
    assert auroc(detector.score(observe(seed_run.model, mnist.test.images)), clothes) >= 0.98
    assert detector.rejects(detector.score(observe(seed_run.model, blank_noise(500)))).double().mean() >= 0.9


def test_statistics_round_trip_through_the_model_file(seed_run):
    loaded = digitlab.load_run(seed_run.path)
    assert loaded.ood.threshold == seed_run.ood.threshold
    for name, tensor in seed_run.ood.tensors().items():
        assert torch.equal(loaded.ood.tensors()[name], tensor), name
    assert read_model_metadata(seed_run.path / "model.safetensors")["ood"]["feature_dim"] == 16


def test_unknown_tensors_are_still_refused(seed_run, tmp_path):
    path = seed_run.path / "model.safetensors"
    tensors, metadata = load_file(str(path)), _raw_metadata(path)
    save_file({**tensors, "bogus": torch.zeros(2)}, str(tmp_path / "extra.safetensors"), metadata=metadata)
    with pytest.raises(RunError, match="bogus"):
        load_model(tmp_path / "extra.safetensors")
    without_metadata = {key: value for key, value in metadata.items() if key != "ood"}
    save_file(tensors, str(tmp_path / "orphan.safetensors"), metadata=without_metadata)
    with pytest.raises(RunError, match=r"ood\.means"):  # statistics without their metadata are unexpected tensors
        load_model(tmp_path / "orphan.safetensors")
    broken = {key: value for key, value in tensors.items() if key != "ood.spread"}
    save_file(broken, str(tmp_path / "broken.safetensors"), metadata=metadata)
    with pytest.raises(RunError, match="out-of-distribution"):
        load_model(tmp_path / "broken.safetensors")


def _raw_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_model_files_without_a_detector_load_and_predict(seed_run, mnist, tmp_path, capsys):
    model = create_model("mlp")
    model.load_state_dict(seed_run.model.state_dict())
    save_model(model, tmp_path / "old.safetensors", preprocess=seed_run.preprocess.to_dict())
    run = digitlab.load_run(tmp_path / "old.safetensors")
    assert run.ood is None
    result = run.predict(mnist.test.images[:1])[0]
    assert result.rejected is None and result.ood_score is None and result.rejection is None
    assert result.to_dict()["rejected"] is None
    Image.fromarray(mnist.test.images[0, 0].numpy()).save(tmp_path / "digit.png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "old.safetensors"), str(tmp_path / "digit.png")]) == 0
    printed = capsys.readouterr()
    assert "?" not in printed.out
    assert printed.err.count("no not-a-digit detector") == 1  # said once, not per picture


def _rejected_fashion_item(run, fashion) -> np.ndarray:
    """The first Fashion-MNIST test picture that, read through predict's preprocessing, the run rejects."""
    results = run.predict(fashion.test.images[:200], errors="collect")
    rejected = [index for index, result in enumerate(results) if result.ok and result.rejected]
    assert rejected, "no Fashion-MNIST picture among 200 was rejected after preprocessing"
    return fashion.test.images[rejected[0], 0].numpy()


def test_predict_cli_marks_a_fashion_picture_with_a_question_mark(seed_run, fashion, mnist, tmp_path, capsys):
    Image.fromarray(_rejected_fashion_item(seed_run, fashion)).save(tmp_path / "clothes.png")
    Image.fromarray(mnist.test.images[0, 0].numpy()).save(tmp_path / "digit.png")
    files = [str(tmp_path / "clothes.png"), str(tmp_path / "digit.png")]
    capsys.readouterr()
    assert main(["predict", str(seed_run.path), *files]) == 0  # a rejection is an answer, not an error
    clothes, digit = capsys.readouterr().out.splitlines()[1:]
    assert clothes.split()[1] == "?" and "does not look like a digit (score" in clothes
    assert digit.split()[1] == mnist.classes[mnist.test.labels[0]]
    assert main(["predict", str(seed_run.path), *files, "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [answer["rejected"] for answer in answers] == [True, False]
    assert answers[0]["ood_score"] > seed_run.ood.threshold >= answers[1]["ood_score"]


def test_api_answer_carries_the_score_and_verdict(seed_run, fashion, mnist):
    with TestClient(create_app(seed_run.path), base_url="http://localhost") as client:
        pictures = [
            Image.fromarray(_rejected_fashion_item(seed_run, fashion)),
            Image.fromarray(mnist.test.images[0, 0].numpy()),
        ]
        clothes, digit = (
            client.post("/api/predict", files={"file": ("p.png", png_bytes(picture), "image/png")}).json()
            for picture in pictures
        )
    assert clothes["rejected"] is True and clothes["ood_score"] > seed_run.ood.threshold
    assert digit["rejected"] is False and isinstance(digit["ood_score"], float)


def test_calibrate_cli_adds_a_detector_to_an_existing_run(seed_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(seed_run.path, folder)
    model = digitlab.load_run(folder).model
    del model.ood
    save_model(
        model,
        folder / "model.safetensors",
        **{
            key: value
            for key, value in read_model_metadata(folder / "model.safetensors").items()
            if key not in ("format", "model", "model_kwargs", "ood")
        },
    )
    assert digitlab.load_run(folder).ood is None
    assert main(["calibrate", str(folder), "--quantile", "0.99"]) == 0
    assert "not a digit" in capsys.readouterr().out
    calibrated = digitlab.load_run(folder).ood
    assert calibrated is not None and calibrated.quantile == 0.99
    assert calibrated.threshold < seed_run.ood.threshold  # a lower quantile of the same validation scores


def test_the_gaussians_and_the_score_match_their_definitions_in_numpy():
    # class means, one shared covariance with a ridge of RIDGE x its mean variance, Mahalanobis distance to
    # the nearest mean; the score sums the views standardised by the validation centre and spread
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(300, 5)) * [1, 2, 3, 0.5, 1], np.arange(300) % 3
    features[labels == 1] += 4
    gaussians = Gaussians.fit(torch.from_numpy(features), torch.from_numpy(labels), 3)
    means = np.stack([features[labels == digit].mean(0) for digit in range(3)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    precision = np.linalg.inv(covariance + RIDGE * np.diag(covariance).mean() * np.eye(5))
    np.testing.assert_allclose(gaussians.means.numpy(), means, rtol=1e-12)
    np.testing.assert_allclose(gaussians.precision.numpy(), precision, rtol=1e-9)
    probes = rng.normal(size=(7, 5)) * 3
    offsets = probes[:, None, :] - means[None]
    expected = np.einsum("ncd,de,nce->nc", offsets, precision, offsets).min(1)
    np.testing.assert_allclose(gaussians.distance(torch.from_numpy(probes)).numpy(), expected, rtol=1e-9)
    centre, spread = (
        torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64),
        torch.tensor([0.7, 1.3, 2.9], dtype=torch.float64),
    )
    detector = Detector(gaussians, gaussians, centre, spread, threshold=1.5)
    seen = Observed(
        torch.from_numpy(probes), torch.from_numpy(probes[::-1].copy()), torch.from_numpy(rng.normal(size=(7, 3)))
    )
    views = detector.views(seen).numpy()
    energy = -np.log(np.exp(seen.logits.numpy()).sum(1))
    np.testing.assert_allclose(views[:, 0], expected, rtol=1e-9)
    np.testing.assert_allclose(views[:, 2], energy, rtol=1e-9)
    scores = detector.score(seen)
    np.testing.assert_allclose(scores.numpy(), ((views - centre.numpy()) / spread.numpy()).sum(1), rtol=1e-12)
    assert torch.equal(detector.rejects(scores), scores > 1.5)
