"""A hand-fused training step for ReLU MLPs under Adam/AdamW, without autograd.

Why: the seed MLP has 25.8k parameters, so at batch 64 a step is ~10 MFLOP and the time goes to
per-operation overhead. This step writes the forward, the softmax-cross-entropy gradient and the
backward as ~20 tensor ops, keeps all parameters, gradients and Adam moments in single flat
buffers (the model's parameters become views into them) and updates them with one call of
torch's fused Adam kernel, the kernel `torch.optim.Adam(fused=True)` uses. Tests check it
against autograd: same gradients, same trajectory. Autograd stays the general path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from ..models.nets import MLP

_threshold_backward = torch.ops.aten.threshold_backward
PIXEL_SCALE = 1.0 / 255


def supports(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """True when the fused step computes exactly what autograd would for this model and optimizer."""
    return (
        isinstance(model, MLP)
        and model.dropout == 0.0
        and type(optimizer) in (torch.optim.Adam, torch.optim.AdamW)
        and len(optimizer.param_groups) == 1
        and not optimizer.param_groups[0]["amsgrad"]
        and not optimizer.param_groups[0]["maximize"]
        and all(parameter.dtype == torch.float32 for parameter in model.parameters())
    )


def _flatten_into_views(tensors: Sequence[torch.Tensor], flat: torch.Tensor) -> list[torch.Tensor]:
    views, offset = [], 0
    for tensor in tensors:
        views.append(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()
    return views


class FusedMLPTrainer:
    """Trains an MLP in place; the optimizer's state stays a normal Adam state (views into flat buffers)."""

    def __init__(
        self, model: MLP, optimizer: torch.optim.Optimizer, reduce_gradients=None, label_smoothing: float = 0.0
    ):
        if not supports(model, optimizer):
            raise ValueError("the fused step needs an MLP without dropout and one Adam/AdamW parameter group")
        self.model, self.optimizer = model, optimizer
        self.reduce_gradients = reduce_gradients  # e.g. the mean over processes, in place
        self.label_smoothing = label_smoothing
        self.params = list(model.parameters())
        self.flat_params = torch.cat([p.detach().reshape(-1) for p in self.params])
        for parameter, view in zip(self.params, _flatten_into_views(self.params, self.flat_params), strict=True):
            parameter.data = view
        self.flat_grads = torch.zeros_like(self.flat_params)
        for parameter, view in zip(self.params, _flatten_into_views(self.params, self.flat_grads), strict=True):
            parameter.grad = view
        self._adopt_optimizer_state()
        linears = model.linear_layers()
        self.weights = [layer.weight.detach() for layer in linears]
        self.weights_t = [weight.t() for weight in self.weights]  # views: they follow in-place updates
        self.biases = [layer.bias.detach() for layer in linears]
        self.weight_grads = cast(list[torch.Tensor], [layer.weight.grad for layer in linears])  # the views set above
        self.bias_grads = [layer.bias.grad for layer in linears]
        self.adam_kernel = torch._fused_adamw_ if isinstance(optimizer, torch.optim.AdamW) else torch._fused_adam_
        # row c: the target distribution of class c, label-smoothed as F.cross_entropy does it
        classes = self.weights[-1].shape[0]
        targets = torch.eye(classes, dtype=self.flat_params.dtype, device=self.flat_params.device)
        self.targets = targets * (1 - label_smoothing) + label_smoothing / classes

    def _adopt_optimizer_state(self) -> None:
        # Moments start at zero, or at what a resumed optimizer already holds.
        state = self.optimizer.state
        self.exp_avg = torch.zeros_like(self.flat_params)
        self.exp_avg_sq = torch.zeros_like(self.flat_params)
        self.step_count = torch.zeros((), dtype=torch.float32, device=self.flat_params.device)
        if self.params[0] in state:
            self.exp_avg.copy_(torch.cat([state[p]["exp_avg"].reshape(-1) for p in self.params]))
            self.exp_avg_sq.copy_(torch.cat([state[p]["exp_avg_sq"].reshape(-1) for p in self.params]))
            self.step_count.fill_(float(state[self.params[0]]["step"]))
        avg_views = _flatten_into_views(self.params, self.exp_avg)
        sq_views = _flatten_into_views(self.params, self.exp_avg_sq)
        for parameter, avg, sq in zip(self.params, avg_views, sq_views, strict=True):
            state[parameter] = {"step": self.step_count, "exp_avg": avg, "exp_avg_sq": sq}

    def step(self, images: torch.Tensor, labels: torch.Tensor, logits_out: torch.Tensor) -> None:
        """One step on a batch of (images (B, 1, 28, 28): uint8 pixels or floats in [0, 1], labels (B,));
        the batch's logits go to `logits_out` (B, C) (a training.steps.Step)."""
        scale = PIXEL_SCALE if images.dtype == torch.uint8 else 1.0
        self._step(images.flatten(1).float(), scale, self.targets.index_select(0, labels), logits_out)

    def _step(self, pixels: torch.Tensor, pixel_scale: float, targets: torch.Tensor, logits: torch.Tensor) -> None:
        # pixels: (B, 784); for raw 0..255 pixels the 1/255 of to_float is folded into the first
        # layer's matmuls (alpha = pixel_scale), which saves a pass over the batch.
        last = len(self.weights) - 1
        activations = [pixels]  # input of each linear layer, (B, fan_in)
        for layer in range(last + 1):
            scale = pixel_scale if layer == 0 else 1.0
            out = logits if layer == last else None
            result = torch.addmm(self.biases[layer], activations[-1], self.weights_t[layer], alpha=scale, out=out)
            if layer < last:
                activations.append(result.relu_())
        # d(mean cross-entropy)/d(logits) = (softmax - target distribution) / B
        grad = torch.softmax(logits, 1).sub_(targets).div_(pixels.shape[0])
        for layer in range(last, -1, -1):
            scale = pixel_scale if layer == 0 else 1.0
            weight_grad = self.weight_grads[layer]
            torch.addmm(weight_grad, grad.t(), activations[layer], beta=0, alpha=scale, out=weight_grad)
            torch.sum(grad, 0, out=self.bias_grads[layer])
            if layer:
                grad = _threshold_backward(torch.mm(grad, self.weights[layer]), activations[layer], 0)
        if self.reduce_gradients is not None:
            self.reduce_gradients(self.flat_grads)
        self._adam_update()

    def _adam_update(self) -> None:
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        self.step_count.add_(1)
        self.adam_kernel(
            [self.flat_params],
            [self.flat_grads],
            [self.exp_avg],
            [self.exp_avg_sq],
            [],
            [self.step_count],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
        )
