"""POST /api/explain, GET /api/weights and /api/models, and serving several runs at once."""

import base64
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from digitlab.cli import main
from digitlab.errors import RunError
from digitlab.inference.explain import explain
from digitlab.runs.shipped import SHIPPED_MODEL
from digitlab.serving.app import create_app
from scans import png_bytes, render_scan
from test_serve import SMALL


@pytest.fixture(scope="module")
def both(seed_run):
    """One app serving the seed MLP (the default) and the shipped CNN."""
    with TestClient(create_app([seed_run.path, SHIPPED_MODEL], SMALL), base_url="http://localhost") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def seven(mnist):
    """Test digit 0 (a 7) as a noisy scan, in the JSON body the page sends."""
    picture = png_bytes(render_scan(mnist.test.images[0, 0].numpy(), np.random.default_rng(5)))
    return {"image": base64.b64encode(picture).decode(), "name": "seven"}


def test_models_lists_every_served_run_and_the_default(both, seed_run):
    listed = both.get("/api/models").json()
    names = [model["name"] for model in listed["models"]]
    assert listed["default"] == seed_run.path.name and names == [seed_run.path.name, SHIPPED_MODEL.stem]
    assert [model["model"] for model in listed["models"]] == ["mlp", "cnn"]
    assert both.get("/api/model", params={"model": SHIPPED_MODEL.stem}).json()["model"] == "cnn"
    assert both.get("/api/model").json()["model"] == "mlp"


def test_explain_gives_predict_answer_and_the_inside_of_the_mlp(both, seed_run, seven):
    predicted = both.post("/api/predict", json=seven).json()
    answer = both.post("/api/explain", json=seven, params={"target": "3"}).json()
    assert {key: answer[key] for key in predicted} == predicted and answer["model"] == seed_run.path.name
    assert answer["top"][0]["label"] == answer["label"] and len(answer["top"]) == 3
    assert [(layer["name"], layer["shape"]) for layer in answer["layers"]] == [("hidden 1", [32]), ("hidden 2", [16])]
    expected = explain(seed_run.model, torch.tensor(answer["image"], dtype=torch.uint8)[None], [3])
    hidden = expected.layers[0].values
    received = torch.tensor(answer["layers"][0]["values"]) / 255 * answer["layers"][0]["limit"]
    torch.testing.assert_close(received, hidden, atol=hidden.max().item() / 255, rtol=0)
    assert [item["label"] for item in answer["saliency"]] == [answer["label"], "3"]
    for item in answer["saliency"]:
        assert len(item["values"]) == 28 and all(len(row) == 28 for row in item["values"])
        assert item["total"] == pytest.approx(item["difference"], rel=0.1, abs=0.2)  # completeness, 16 steps
        torch.testing.assert_close(torch.tensor(item["values"]), expected.saliency[item["index"]], rtol=1e-3, atol=1e-5)
    assert "integrated gradients" in answer["method"]


def test_explain_with_the_default_cnn_stays_small(both, seven):
    response = both.post("/api/explain", json=seven, params={"model": SHIPPED_MODEL.stem, "target": ["3", "1"]})
    answer = response.json()
    assert response.status_code == 200 and answer["label"] == "7", answer
    assert len(response.content) < 200_000, len(response.content)
    assert [layer["name"] for layer in answer["layers"]] == ["block 1", "block 2", "block 3"]
    assert [len(item["values"]) for item in answer["saliency"]] == [28, 28, 28]
    maps = answer["layers"][0]
    assert (
        len(maps["values"]) == maps["shape"][0] and max(max(max(row) for row in grid) for grid in maps["values"]) == 255
    )


def test_weights_are_the_first_layer_and_cacheable(both, seed_run):
    response = both.get("/api/weights")
    weights = response.json()
    assert weights["kind"] == "units" and weights["shape"] == [32, 28, 28] and len(weights["bias"]) == 32
    first = seed_run.model.net[0].weight.detach().reshape(32, 28, 28)
    received = torch.tensor(weights["values"]) / 255 * weights["limit"]
    torch.testing.assert_close(received, first, atol=weights["limit"] / 255, rtol=0)
    again = both.get("/api/weights", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    filters = both.get("/api/weights", params={"model": SHIPPED_MODEL.stem}).json()
    assert filters["kind"] == "filters" and filters["shape"][1:] == [3, 3] and filters["bias"] is None


def test_unknown_model_or_class_is_a_one_line_json_error(both, seven):
    for route in ("/api/explain", "/api/predict", "/api/number"):
        response = both.post(route, json=seven, params={"model": "nope"})
        assert response.status_code == 404 and response.json() == {
            "error": f"no served model is named 'nope' (serving: {', '.join(m['name'] for m in both.get('/api/models').json()['models'])})"
        }
    assert both.get("/api/weights", params={"model": "nope"}).status_code == 404
    response = both.post("/api/explain", json=seven, params={"target": "x"})
    assert response.status_code == 422 and response.json()["error"].startswith("unknown class 'x'")


def test_two_runs_of_one_name_and_a_corrupt_one(seed_run, tmp_path, capsys):
    app = create_app([seed_run.path, seed_run.path])
    assert list(app.state.served.runs) == [seed_run.path.name, f"{seed_run.path.name}-2"]
    broken = tmp_path / "broken"
    shutil.copytree(seed_run.path, broken)
    (broken / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(RunError, match="broken"):
        create_app([seed_run.path, broken])
    assert main(["serve", str(seed_run.path), str(broken), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digitlab: error: ") and err.count("\n") == 1 and "broken" in err
    assert main(["serve", str(seed_run.path), str(tmp_path / "gone"), "--port", "0"]) == 2
    assert capsys.readouterr().err == f"digitlab: error: no run folder at {tmp_path / 'gone'}\n"


def test_openapi_documents_explain_its_parameters_and_its_method(both):
    schema = both.get("/openapi.json").json()
    route = schema["paths"]["/api/explain"]["post"]
    assert "integrated gradients" in route["description"] and "gradient × input" in route["description"]
    assert {parameter["name"] for parameter in route["parameters"]} == {"model", "target"}
    assert set(route["responses"]) == {"200", "400", "401", "404", "408", "413", "415", "422", "503"}
    assert set(route["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    fields = schema["components"]["schemas"]["ExplanationOut"]["properties"]
    assert {"layers", "saliency", "top", "method", "image", "probabilities"} <= set(fields)
