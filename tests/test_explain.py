"""digitlab.explain: hidden layers against a hand computation, integrated gradients against its definition
(exact for a linear model; completeness for ReLU nets), and the Python API on real pictures."""

import pytest
import torch
from PIL import Image

import digitlab
from digitlab.errors import ConfigError
from digitlab.inference.explain import explain, first_layer_weights, hidden_layers, integrated_gradients
from digitlab.models.nets import create_model
from digitlab.runs.shipped import load_shipped


@pytest.fixture(scope="module")
def cnn():
    return load_shipped()


def test_hidden_layers_of_an_mlp_are_its_relu_outputs(seed_run, mnist):
    images = mnist.test.images[:3]
    first, second, _ = seed_run.model.linear_layers()
    x = images.float().flatten(1) / 255
    hidden1 = torch.relu(x @ first.weight.T + first.bias)
    hidden2 = torch.relu(hidden1 @ second.weight.T + second.bias)
    layers = hidden_layers(seed_run.model, images)
    assert [(layer.name, layer.kind) for layer in layers] == [("hidden 1", "dense"), ("hidden 2", "dense")]
    torch.testing.assert_close(layers[0].values, hidden1.detach())
    torch.testing.assert_close(layers[1].values, hidden2.detach())


def test_hidden_layers_of_a_cnn_are_its_pooled_blocks(cnn, mnist):
    image = mnist.test.images[:1]
    layers = hidden_layers(cnn.model, image)
    widths = cnn.model.channels
    assert [tuple(layer.values.shape) for layer in layers] == [
        (1, widths[0], 14, 14),
        (1, widths[1], 7, 7),
        (1, widths[2], 3, 3),
    ]
    with torch.no_grad():
        expected = cnn.model.features[:4](image.float() / 255)
    torch.testing.assert_close(layers[0].values, expected, rtol=1e-4, atol=1e-5)
    assert all(layer.kind == "maps" and layer.values.min() >= 0 for layer in layers)  # after ReLU and max-pool


def test_integrated_gradients_of_a_linear_model_is_weight_times_input():
    """For logits = W x + b, the gradient is W[c] everywhere on the path, so IG = W[c] ⊙ (x - baseline) exactly."""
    torch.manual_seed(0)
    model = create_model("mlp", hidden=())
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    maps, _ = integrated_gradients(model, image, [3, 8], steps=4)
    weight = model.net[0].weight.detach()
    x = image.float() / 255
    torch.testing.assert_close(maps[0], (weight[3].reshape(28, 28) * x[0]))
    torch.testing.assert_close(maps[1], (weight[8].reshape(28, 28) * x[0]))


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_integrated_gradients_completeness(which, seed_run, cnn, mnist):
    """Sum of attributions = logit(x) - logit(baseline), up to the midpoint rule's error, for ReLU nets."""
    model = seed_run.model if which == "mlp" else cnn.model
    image = mnist.test.images[0]
    explanation = explain(model, image, targets=[3], steps=128)
    for index, values in explanation.saliency.items():
        difference = float(explanation.logits[index] - explanation.baseline_logits[index])
        assert float(values.sum()) == pytest.approx(difference, rel=0.03, abs=0.05), index
    assert list(explanation.saliency) == [7, 3] and explanation.index == 7


def test_targets_are_attributed_independently_in_one_batch(cnn, mnist):
    image = mnist.test.images[1]
    together, _ = integrated_gradients(cnn.model, image, [2, 5], steps=8)
    alone, _ = integrated_gradients(cnn.model, image, [5], steps=8)
    torch.testing.assert_close(together[1], alone[0], rtol=1e-4, atol=1e-6)


def test_first_layer_weights(seed_run, cnn):
    kind, weights, bias = first_layer_weights(seed_run.model)
    assert kind == "units" and weights.shape == (32, 28, 28) and bias.shape == (32,)
    torch.testing.assert_close(weights[5].flatten(), seed_run.model.net[0].weight[5].detach())
    kind, weights, bias = first_layer_weights(cnn.model)
    assert kind == "filters" and weights.shape == (cnn.model.channels[0], 3, 3) and bias is None


def test_explain_refuses_what_it_cannot_explain(seed_run, mnist):
    with pytest.raises(ConfigError, match="uint8"):
        explain(seed_run.model, mnist.test.images[0].float(), [])
    with pytest.raises(ConfigError, match="between 0 and 9"):
        explain(seed_run.model, mnist.test.images[0], [10])
    with pytest.raises(ConfigError, match="unknown class 'x'"):
        seed_run.explain(mnist.test.images[0, 0].numpy(), targets=["x"])


def test_python_api_explains_a_picture_file(mnist, tmp_path, seed_run):
    path = tmp_path / "seven.png"
    Image.fromarray(mnist.test.images[0, 0].numpy()).resize((140, 140)).save(path)
    shipped = digitlab.explain(path, targets=["3"])
    assert shipped.index == 7 and list(shipped.saliency) == [7, 3] and len(shipped.layers) == 3
    assert shipped.top(3)[0][0] == 7 and shipped.box is not None and shipped.image.dtype == torch.uint8
    mine = seed_run.explain(path)
    assert [layer.values.shape for layer in mine.layers] == [(32,), (16,)]
    assert mine.probabilities.sum().item() == pytest.approx(1.0)


def test_report_picks_and_the_digits_that_excite_a_filter(cnn, mnist):
    from digitlab.figures.explanations import saliency_picks, strongest_digits

    labels = torch.tensor([1, 2, 3, 4, 5])
    probabilities = torch.tensor([[0.1, 0.9, 0, 0, 0, 0]] * 5)  # always "1": right once, wrong four times
    probabilities[3, 1], probabilities[3, 0] = 0.6, 0.4  # the least confident of the wrong ones
    right, wrong = saliency_picks(labels, probabilities, count=3)
    assert right.tolist() == [0] and wrong.tolist() == [1, 2, 4]
    layer = cnn.model.first_conv()
    images = mnist.train.images[:300]
    with torch.no_grad():
        peaks = layer(images.float() / 255).amax((2, 3))  # (300, filters)
    found = strongest_digits(layer, images, count=4)
    assert found.shape == (layer.out_channels, 4)
    for unit in range(layer.out_channels):
        torch.testing.assert_close(peaks[found[unit], unit], peaks[:, unit].sort(descending=True).values[:4])


def test_cli_explains_one_picture_and_refuses_bad_input(seed_run, mnist, tmp_path, capsys):
    import json

    from digitlab.cli import main

    path = tmp_path / "seven.png"
    Image.fromarray(mnist.test.images[0, 0].numpy()).save(path)
    assert main(["explain", str(seed_run.path), str(path), "--target", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0].startswith(f"{path}: 7 ") and lines[1].startswith("  hidden 1: ") and "of 32 units active" in lines[1]
    )
    assert lines[-2].startswith("  why 7: saliency sums to") and lines[-1].startswith("  why 3: ")
    assert main(["explain", str(seed_run.path), str(path), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["label"] == "7" and [layer["shape"] for layer in answer["layers"]] == [[32], [16]]
    assert len(answer["saliency"]) == 1 and len(answer["saliency"][0]["values"]) == 28
    assert main(["explain", str(seed_run.path), str(path), "--target", "x"]) == 2
    assert capsys.readouterr().err == "digitlab: error: unknown class 'x' (classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)\n"
    assert main(["explain", str(seed_run.path), str(path), str(path)]) == 2
    assert "one picture at a time, got 2" in capsys.readouterr().err


@pytest.mark.parametrize("name", digitlab.list_models())
def test_every_registered_model_can_be_explained(name, mnist):
    torch.manual_seed(0)
    model = create_model(name).eval()
    explanation = explain(model, mnist.test.images[0], targets=[1], steps=64)
    assert explanation.layers and all(layer.values.dim() in (1, 3) for layer in explanation.layers)
    assert first_layer_weights(model) is not None
    for index, values in explanation.saliency.items():
        difference = float(explanation.logits[index] - explanation.baseline_logits[index])
        assert float(values.sum()) == pytest.approx(difference, rel=0.05, abs=0.02), (name, index)
