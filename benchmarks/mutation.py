"""How strong the tests are: mutation testing (cosmic-ray) of the modules that decide answers, with the fast
tests that cover each.

cosmic-ray writes every mutant of a module (an operator swapped, a constant changed, a condition
negated...), runs the module's tests against each one, and calls a mutant killed when they fail. There
are thousands per module and each run imports torch and runs the tests, so a seeded sample of
--sample mutants per module is run (the rest are marked skipped); the share killed is of the sampled
mutants that ran, with its count beside it. Mutants whose tests could not start (incompetent) are
counted apart and left out of the share, and so are mutants inside type annotations, which this
package never evaluates (`from __future__ import annotations`): no test could kill them. Each module's source is restored when its run ends.

    python benchmarks/mutation.py [--sample 20] [--seed 0] [--module NAME ...] [--timeout 180]

writes benchmarks/results/mutation.json (modules not run this time keep their earlier figures) and
exits 1 when a module run here kills under 80% of its mutants. `make mutation` runs it at nice 15.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

from common import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.8
# module -> (its file, the fast tests that cover it)
MODULES = {
    "preprocessing": ("src/digitlab/images/preprocess.py", ["tests/test_preprocess.py", "tests/test_decode.py"]),
    "ink finding": ("src/digitlab/images/ink.py", ["tests/test_preprocess.py", "tests/test_page.py"]),
    "not-a-digit detector": ("src/digitlab/inference/ood.py", ["tests/test_ood.py"]),
    "not-a-digit judge": ("src/digitlab/inference/rejection.py", ["tests/test_rejection.py"]),
    "number reading": ("src/digitlab/inference/numbers.py", ["tests/test_numbers.py"]),
    "fit loop": ("src/digitlab/training/train.py", ["tests/test_train.py", "tests/test_recipes.py"]),
    "fit steps and schedule": ("src/digitlab/training/steps.py", ["tests/test_train.py", "tests/test_recipes.py"]),
}
TEST_FLAGS = '-x -q -p no:cacheprovider -m "not slow and not browser and not postgres"'


def config_text(module: str, tests: list[str], timeout: float) -> str:
    command = f"{sys.executable} -m pytest {TEST_FLAGS} {' '.join(tests)}"
    return (
        f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout}\nexcluded-modules = []\n'
        f'test-command = {json.dumps(command)}\n\n[cosmic-ray.distributor]\nname = "local"\n'
    )


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) (line, column) of every type annotation in `source`: with `from __future__ import
    annotations` they are never evaluated, so a mutant inside one is equivalent (no test can kill it)."""
    spans = []
    annotated = (ast.FunctionDef, ast.AsyncFunctionDef, ast.arg, ast.AnnAssign)
    for node in ast.walk(ast.parse(source)):
        annotations = [getattr(node, "returns", None), getattr(node, "annotation", None)]
        if not isinstance(node, annotated):
            continue
        for annotation in filter(None, annotations):
            start = (annotation.lineno, annotation.col_offset)
            spans.append((start, (annotation.end_lineno or start[0], annotation.end_col_offset or 0)))
    return spans


def sample(session: Path, source: str, size: int, seed: int) -> tuple[int, int]:
    """Keep `size` work items of the session, chosen by `seed` among those outside type annotations; mark the
    others skipped. Returns (all mutants, mutants inside annotations)."""
    spans = annotation_spans(source) if "from __future__ import annotations" in source else []
    with use_db(str(session), WorkDB.Mode.open) as db:
        # in source order (job ids are random per init), so a seed always draws the same mutants
        items = sorted(db.work_items, key=_where)
        inside = {
            item.job_id
            for item in items
            if any(start <= tuple(item.mutations[0].start_pos) < end for start, end in spans)
        }
        jobs = [item.job_id for item in items if item.job_id not in inside]
        kept = set(random.Random(seed).sample(jobs, min(size, len(jobs))))
        skipped = WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="not in the sample")
        db.set_multiple_results([item.job_id for item in items if item.job_id not in kept], skipped)
        return len(items), len(inside)


def _where(item) -> tuple:
    mutation = item.mutations[0]
    return (tuple(mutation.start_pos), tuple(mutation.end_pos), mutation.operator_name, mutation.occurrence)


def outcomes(session: Path) -> dict:
    """Killed, survived and incompetent counts of the mutants that ran, and each survivor's diff."""
    counts = {"killed": 0, "timeouts": 0, "survived": 0, "incompetent": 0}
    survivors = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.SURVIVED:
                counts["survived"] += 1
                mutation = item.mutations[0]
                survivors.append(
                    {
                        "line": mutation.start_pos[0],
                        "operator": mutation.operator_name.split("/")[-1],
                        "diff": _changed_lines(result.diff or ""),
                    }
                )
            elif result.test_outcome == TestOutcome.INCOMPETENT or result.worker_outcome != WorkerOutcome.NORMAL:
                counts["incompetent"] += 1
            else:
                counts["killed"] += 1
                counts["timeouts"] += result.output == "timeout"
    return {**counts, "survivors": sorted(survivors, key=lambda survivor: survivor["line"])}


def _changed_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def run_module(name: str, size: int, seed: int, timeout: float) -> dict:
    module, tests = MODULES[name]
    original = (ROOT / module).read_text()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="digitlab-mutation-") as folder:
        config, session = Path(folder) / "config.toml", Path(folder) / "session.sqlite"
        config.write_text(config_text(module, tests, timeout))
        cosmic_ray = [str(Path(sys.executable).parent / "cosmic-ray")]
        subprocess.run([*cosmic_ray, "init", str(config), str(session)], cwd=ROOT, check=True)
        total, equivalent = sample(session, original, size, seed)
        try:
            subprocess.run([*cosmic_ray, "exec", str(config), str(session)], cwd=ROOT, check=True)
        finally:
            (ROOT / module).write_text(original)  # cosmic-ray restores it too, unless it was stopped
        counts = outcomes(session)
    scored = counts["killed"] + counts["survived"]
    killed_share = counts["killed"] / scored if scored else None
    return {
        "module": module,
        "tests": tests,
        "mutants": total,
        "in_annotations": equivalent,
        "sampled": min(size, total - equivalent),
        **counts,
        "killed_share": killed_share,
        "meets_goal": killed_share is not None and killed_share >= GOAL,
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=20, help="mutants run per module (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--module", nargs="*", choices=sorted(MODULES), help="modules to run (default: all)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a mutant's tests may take (default 180)")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    earlier_path = RESULTS / "mutation.json"
    earlier = json.loads(earlier_path.read_text())["modules"] if earlier_path.exists() else {}
    modules = dict(earlier)
    for name in args.module or list(MODULES):
        modules[name] = {**run_module(name, args.sample, args.seed, args.timeout), "sample_seed": args.seed}
        row = modules[name]
        share = "none ran" if row["killed_share"] is None else f"{row['killed_share']:.0%}"
        print(f"{name}: {row['killed']} of {row['killed'] + row['survived']} killed ({share})", flush=True)
        path = write_result("mutation", {"goal": GOAL, "tool": "cosmic-ray", "modules": modules})  # after each
    print(f"wrote {path}")
    ran = [modules[name] for name in args.module or list(MODULES)]
    return 0 if all(row["meets_goal"] for row in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
