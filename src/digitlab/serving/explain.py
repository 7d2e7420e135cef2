"""The web demo's look inside: several served models, POST /api/explain's answer and GET /api/weights.

`ServedModels` holds the runs `digitlab serve RUN [RUN ...]` serves, by name; every picture route
takes `?model=NAME` (default: the first). `explained(name, run, answer, targets)` adds to /api/predict's
answer what digitlab.explain computes for the same 28×28 image: the hidden layers, integrated-
gradients saliency and the top classes. Feature maps and weights travel as small integers with one
`limit` per array (value ≈ q / QUANT · limit), which keeps the shipped CNN's answer to tens of kB; dense
activations are few and saliency is read as numbers, so those stay floats.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ..errors import ConfigError
from ..inference.explain import STEPS, Layer, class_indices, explain, first_layer_weights
from ..runs.run import MODEL_FILE, Run
from ..runs.shipped import SHIPPED_MODEL, resolve_run
from .body import clean

QUANT = 255  # feature maps and weights are sent as integers in [-QUANT, QUANT]
METHOD = f"integrated gradients, {STEPS} steps from a black image"
EXPLAIN_DOC = (
    "Everything /api/predict answers, and the inside of the model for the same 28×28 image. "
    "Saliency is integrated gradients from a black image (the empty pad) rather than gradient × input: "
    "a single gradient of a ReLU net sees only the local slope, so saturated units contribute nothing and "
    "the map is noisy, while integrated gradients averages the gradient along the path from the blank page "
    "and its values add up to the class's logit rise from that page (`total` ≈ `difference`). "
    "Feature maps and weights are integers q with value ≈ q / 255 × limit."
)


class LayerOut(BaseModel):
    name: str = Field(description='"hidden 1", "hidden 2"... for an MLP; "block 1"... for a conv net')
    kind: str = Field(description='"dense" (values: one per unit) or "maps" (values: channels × rows × columns)')
    shape: list[int]
    limit: float = Field(description="the largest |activation|: value ≈ q / 255 × limit")
    values: list = Field(description="integers q in [-255, 255], nested as `shape` says")


class SaliencyOut(BaseModel):
    label: str
    index: int
    values: list[list[float]] = Field(description="28×28 attributions: how much each pixel pushed this class's logit")
    total: float = Field(description="their sum, ≈ logit(image) - logit(black image) (completeness)")
    difference: float = Field(description="logit(image) - logit(black image) itself")


class TopOut(BaseModel):
    label: str
    index: int
    probability: float


class ExplanationOut(BaseModel):
    model: str = Field(description="the served model's name")
    label: str
    index: int
    confidence: float
    probabilities: list[float]
    image: list[list[int]] = Field(description="the 28×28 image the model saw (0 background, 255 ink)")
    box: list[int]
    ood_score: float | None
    rejected: bool | None
    top: list[TopOut] = Field(description="the three most likely classes, best first")
    method: str = Field(description="how saliency is computed")
    layers: list[LayerOut] = Field(description="every hidden layer's output for this image")
    saliency: list[SaliencyOut] = Field(description="the predicted class first, then each requested `target`")


class WeightsOut(BaseModel):
    model: str
    kind: str = Field(description='"units": an MLP\'s first-layer units as 28×28 images; "filters": conv kernels')
    shape: list[int]
    limit: float = Field(description="the largest |weight|: weight ≈ q / 255 × limit")
    values: list = Field(description="integers q in [-255, 255], one image per unit or filter")
    bias: list[float] | None


class ServedModels:
    """The runs one server serves, by name; the first is the default."""

    def __init__(self, runs_or_paths, device: str | torch.device = "cpu") -> None:
        items = list(runs_or_paths) if isinstance(runs_or_paths, (list, tuple)) else [runs_or_paths]
        self.runs: dict[str, Run] = {}
        for item in items or [None]:
            run = resolve_run(item, device)
            run.model.eval()
            name = key = served_name(item, run)
            number = 1
            while key in self.runs:  # two runs of the same name: the second is NAME-2
                number += 1
                key = f"{name}-{number}"
            self.runs[key] = run
        self._weights: dict[str, tuple[dict, str]] = {}

    @property
    def default(self) -> str:
        return next(iter(self.runs))

    def pick(self, name: str | None) -> tuple[str, Run]:
        """(name, run) for `name`, the default for None; HTTP 404 naming the served ones otherwise."""
        name = name or self.default
        if name not in self.runs:
            raise HTTPException(404, f"no served model is named {name!r} (serving: {', '.join(self.runs)})")
        return name, self.runs[name]

    def weights(self, name: str | None, if_none_match: str | None) -> Response:
        """GET /api/weights's answer for model `name` (computed once), or 304 when the client holds it already;
        404 for a model without a first-layer picture."""
        name, run = self.pick(name)
        if name not in self._weights:
            answer = weights_answer(name, run)
            tag = hashlib.sha256(json.dumps(answer).encode()).hexdigest()[:16]
            self._weights[name] = answer, f'"{tag}"'
        answer, tag = self._weights[name]
        headers = {"ETag": tag, "Cache-Control": "no-cache"}  # revalidate: a restarted server may serve other weights
        if if_none_match == tag:
            return Response(status_code=304, headers=headers)
        return JSONResponse(answer, headers=headers)


def served_name(item, run: Run) -> str:
    """A short name for a served run: its folder's name, a model file's stem, or the shipped file's stem."""
    if item is None:
        return SHIPPED_MODEL.stem
    if run.path is not None:
        return run.path.name
    if isinstance(item, (str, Path)):
        path = Path(item)
        return path.parent.name if path.name == MODEL_FILE and path.parent.name else path.stem
    return str(run.config.model)


def quantised(values: torch.Tensor) -> tuple[float, list]:
    """(limit, integers in [-QUANT, QUANT] nested like `values`), with value ≈ q / QUANT · limit."""
    limit = float(values.abs().max()) if values.numel() else 0.0
    scaled = values * (QUANT / limit) if limit > 0 else torch.zeros_like(values)
    return limit, scaled.round().to(torch.int16).tolist()


def layer_answer(layer: Layer) -> dict:
    limit, values = quantised(layer.values.float())
    return {"name": layer.name, "kind": layer.kind, "shape": list(layer.values.shape), "limit": limit, "values": values}


def _rounded(rows: torch.Tensor) -> list[list[float]]:
    return [[float(f"{value:.4g}") for value in row] for row in rows.tolist()]


def target_indices(run: Run, targets: list[str]) -> list[int]:
    """The `target` query values (class names, or indices written in ASCII digits) as class indices, each once;
    HTTP 400 for a malformed index ('²', '٣'), 422 for an unknown class, or for more targets than there are
    classes (each costs a saliency map)."""
    if len(targets) > len(run.classes):
        raise HTTPException(422, f"at most {len(run.classes)} targets, got {len(targets)}")
    names = [str(name) for name in run.classes]
    for target in targets:
        if target not in names and any(c.isdigit() for c in target) and not (target.isascii() and target.isdecimal()):
            raise HTTPException(400, f"malformed target {clean(target)!r}: a class name, or an index in digits 0-9")
    wanted = [int(t) if t.isascii() and t.isdecimal() and len(t) < 10 and t not in names else t for t in targets]
    try:
        return list(dict.fromkeys(class_indices(wanted, run.classes)))
    except ConfigError as error:
        raise HTTPException(422, clean(str(error))) from None


def explained(name: str, run: Run, answer: dict, targets: list[int]) -> dict:
    """/api/predict's `answer` for a picture, with what the model computes inside for the image it saw."""
    image = torch.tensor(answer["image"], dtype=torch.uint8)[None]
    explanation = explain(run.model, image, targets)
    assert explanation.baseline_logits is not None  # explain always attributes from a baseline
    saliency = [
        {
            "label": str(run.classes[index]),
            "index": index,
            "values": _rounded(values),
            "total": float(values.sum()),
            "difference": float(explanation.logits[index] - explanation.baseline_logits[index]),
        }
        for index, values in explanation.saliency.items()
    ]
    top = [
        {"label": str(run.classes[index]), "index": index, "probability": probability}
        for index, probability in explanation.top(3)
    ]
    layers = [layer_answer(layer) for layer in explanation.layers]
    return {"model": name, **answer, "top": top, "method": METHOD, "layers": layers, "saliency": saliency}


def weights_answer(name: str, run: Run) -> dict:
    """What the model's first layer looks for (see digitlab.inference.explain.first_layer_weights); HTTP 404 if nothing."""
    found = first_layer_weights(run.model)
    if found is None:
        raise HTTPException(404, f"model {name!r} ({run.config.model}) has no first-layer picture")
    kind, weights, bias = found
    limit, values = quantised(weights)
    return {
        "model": name,
        "kind": kind,
        "shape": list(weights.shape),
        "limit": limit,
        "values": values,
        "bias": None if bias is None else bias.tolist(),
    }
