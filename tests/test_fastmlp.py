"""The hand-fused MLP step checked against autograd: same gradients, same trajectory."""

import pytest
import torch
import torch.nn.functional as F

from digitlab import TrainConfig, create_model
from digitlab.data.datasets import to_float
from digitlab.training.fastmlp import FusedMLPTrainer, supports
from digitlab.training.train import build_optimizer


def _batches(count, batch_size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 256, (batch_size, 1, 28, 28), dtype=torch.uint8, generator=generator),
            torch.randint(0, 10, (batch_size,), generator=generator),
        )
        for _ in range(count)
    ]


def _pair(hidden, optimizer="adam", weight_decay=0.0):
    config = TrainConfig(optimizer=optimizer, weight_decay=weight_decay, lr=1e-3)
    models = []
    for _ in range(2):
        torch.manual_seed(3)
        models.append(create_model("mlp", hidden=hidden))
    return [(model, build_optimizer(model, config)) for model in models]


def test_fused_gradients_equal_autograd_gradients():
    (reference, _), (model, optimizer) = _pair([32, 16])
    images, labels = _batches(1, 64)[0]
    F.cross_entropy(reference(to_float(images)), labels).backward()
    optimizer.param_groups[0]["lr"] = 0.0  # take the step, change nothing, keep the gradients
    FusedMLPTrainer(model, optimizer).step(images, labels, torch.empty(64, 10))
    for expected, parameter in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, expected.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "hidden, optimizer, weight_decay", [([32, 16], "adam", 0.0), ([64], "adamw", 0.01), ([48, 24, 12], "adam", 1e-4)]
)
def test_fused_trajectory_follows_autograd(hidden, optimizer, weight_decay):
    (reference, reference_optimizer), (model, fused_optimizer) = _pair(hidden, optimizer, weight_decay)
    batches = _batches(40, 32)
    reference_logits = []
    for images, labels in batches:
        logits = reference(to_float(images))
        reference_logits.append(logits.detach())
        reference_optimizer.zero_grad()
        F.cross_entropy(logits, labels).backward()
        reference_optimizer.step()
    logits = torch.empty(40 * 32, 10)
    fused = FusedMLPTrainer(model, fused_optimizer)
    for number, (images, labels) in enumerate(batches):
        fused.step(images, labels, logits[number * 32 : (number + 1) * 32])
    torch.testing.assert_close(logits, torch.cat(reference_logits), rtol=1e-3, atol=1e-4)
    for expected, parameter in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(parameter, expected, rtol=1e-3, atol=1e-4)
    # the optimizer state stays a normal Adam state, so it can be saved and resumed
    state = fused_optimizer.state_dict()["state"]
    expected_state = reference_optimizer.state_dict()["state"]
    for index in expected_state:
        assert float(state[index]["step"]) == float(expected_state[index]["step"]) == 40
        torch.testing.assert_close(state[index]["exp_avg"], expected_state[index]["exp_avg"], rtol=1e-3, atol=1e-5)


def test_fused_step_declines_what_it_cannot_do():
    config = TrainConfig()
    dropout = create_model("mlp", dropout=0.2)
    assert not supports(dropout, build_optimizer(dropout, config))
    plain = create_model("mlp")
    assert supports(plain, build_optimizer(plain, config))
    assert not supports(plain, build_optimizer(plain, config.replace(optimizer="sgd")))
