import pytest
import torch

from digitlab import create_model, list_models
from digitlab.errors import ConfigError
from digitlab.models.nets import count_parameters
from digitlab.runs.run import load_model, save_model


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_maps_images_to_ten_logits(name):
    model = create_model(name)
    logits = model(torch.rand(5, 1, 28, 28))
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_survives_a_save_and_load(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    save_model(model, tmp_path / "m.safetensors")
    loaded, metadata = load_model(tmp_path / "m.safetensors")
    images = torch.rand(3, 1, 28, 28)
    assert metadata["model"] == name
    assert torch.equal(model(images), loaded(images))


def test_default_mlp_is_the_seed_architecture():
    model = create_model("mlp")
    assert count_parameters(model) == 25_818
    assert [tuple(layer.weight.shape) for layer in model.linear_layers()] == [(32, 784), (16, 32), (10, 16)]


def test_model_arguments_are_recorded_and_checked():
    assert create_model("mlp", hidden=[64]).spec == {"name": "mlp", "kwargs": {"hidden": [64]}}
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("resnet1000")
    with pytest.raises(ConfigError, match="takes no argument depth"):
        create_model("mlp", depth=3)
    with pytest.raises(ConfigError, match="hidden sizes must be positive"):
        create_model("mlp", hidden=[0])
