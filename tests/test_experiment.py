"""The augmentation study end to end on a small slice of real MNIST."""

import json

import digitlab
from digitlab.training.experiment import augmentation_study


def test_augmentation_study_writes_results_table_and_plot(mnist, tmp_path):
    small = digitlab.Dataset("mnist", mnist.classes, mnist.train.take(4000), mnist.val.take(500), mnist.test.take(1000))
    result = augmentation_study(seeds=2, models=("mlp",), epochs=1, out=tmp_path, dataset=small)
    assert len(result["runs"]) == 4 and {run["augment"] for run in result["runs"]} == {False, True}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["augment"] for row in saved["summary"]] == [False, True]
    for row in saved["summary"]:
        accuracies = [run["test_accuracy"] for run in result["runs"] if run["augment"] == row["augment"]]
        assert abs(row["test_accuracy_mean"] - sum(accuracies) / 2) < 1e-12
        assert set(row["robustness_mean"]) >= {"clean", "rotate +30°", "shift +3 px", "scale 0.8"}
    table = (tmp_path / "results.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| mlp | no |") and table[3].startswith("| mlp | yes |")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    assert all(
        (tmp_path / "runs" / f"mlp-{kind}-seed{seed}" / "model.safetensors").exists()
        for kind in ("plain", "aug")
        for seed in (1, 2)
    )
