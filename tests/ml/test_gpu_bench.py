"""benchmarks/gpu_bench.py runs where only torch and numpy are: a short CPU run in a child process
that cannot import torchrec, fbgemm, polars, Ray, Dagster, Delta, MLflow or DuckDB, with positive
figures and the factorized scorer equal to the model on the explicit pairs. Speed is not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_bench

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torchrec", "fbgemm_gpu", "polars", "ray", "dagster", "deltalake", "mlflow", "duckdb")
# what the bench may import from the project
ALLOWED = {"benchmarks", "benchmarks.gpu_bench", "ml", "ml.batch", "ml.cooccurrence", "ml.features", "ml.pairs",
           "ml.factorized", "ml.metrics", "ml.model", "ml.optim", "ml.prefetch", "ml.train"}

WRAPPER = """
import json, runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
sys.argv = ["gpu_bench", *{argv!r}]
code = 0
try:
    runpy.run_module("benchmarks.gpu_bench", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("ml", "benchmarks"))
present = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r}
                 and sys.modules[m] is not None)
print("IMPORTS " + json.dumps({{"project": loaded, "blocked_present": present}}))
sys.exit(code)
"""


def test_gpu_bench_runs_on_cpu_without_torchrec_polars_ray(tmp_path):
    out = tmp_path / "gpu_bench.json"
    argv = ["--device", "cpu", "--threads", "1", "--seconds", "0.2", "--batch-sizes", "128,256",
            "--rows", "2048", "--warmup-steps", "2", "--classes", "48", "--score-users", "8,24",
            "--e2e-users", "12", "--check-users", "4", "--warmup-calls", "1", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", WRAPPER.format(blocked=BLOCKED, argv=argv)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("IMPORTS "))
    imports = json.loads(line.removeprefix("IMPORTS "))
    assert imports["blocked_present"] == []
    assert set(imports["project"]) <= ALLOWED, set(imports["project"]) - ALLOWED

    result = json.loads(out.read_text())
    assert "fatal" not in result and result["errors"] == [], result.get("errors")
    assert result["machine"]["torch"] and result["machine"]["device"] == "cpu"
    model = result["model"]
    assert (model["n_sparse"], model["n_dense"]) == (20, len(gpu_bench.default_spec().dense))
    assert model["vocab_fallback"] == []
    assert model["heads"] == ["take", "complete", "music_like"]

    train = result["train"]
    assert {(r["batch_size"], r["mode"]) for r in train} == {
        (b, m) for b in (128, 256) for m in ("step only", "input pipeline", "prefetched")}
    assert all(r["samples_per_s"] > 0 and r["steps"] >= 1 for r in train)

    checks = result["score"]["check"]
    assert [c["precision"] for c in checks] == ["fp32", "bf16"]
    assert all(c["passed"] for c in checks) and result["checks_passed"]
    assert checks[0]["max_abs_err_vs_model_on_device"] < 1e-4
    throughput = result["score"]["throughput"]
    assert {(r["precision"], r["mode"], r["users"]) for r in throughput} == {
        (p, "kernel", u) for p in ("fp32", "bf16") for u in (8, 24)} | {
        (p, "end to end", 12) for p in ("fp32", "bf16")}
    assert all(r["scores_per_s"] > 0 and r["scores"] == r["calls"] * r["users"] * 48
               for r in throughput)


def test_one_failure_is_recorded_and_the_rest_still_run(tmp_path):
    """A batch larger than the host data set fails the input-pipeline measurement only."""
    out = tmp_path / "gpu_bench.json"
    rc = gpu_bench.main(["--device", "cpu", "--threads", "1", "--seconds", "0.05",
                         "--batch-sizes", "64,512", "--rows", "256", "--warmup-steps", "1",
                         "--skip-score", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    by = {(r["batch_size"], r["mode"]): r for r in result["train"]}
    assert "smaller than a batch" in by[(512, "input pipeline")]["error"]
    assert "smaller than a batch" in by[(512, "prefetched")]["error"]  # raised in the consumer
    assert by[(64, "input pipeline")]["samples_per_s"] > 0
    assert by[(512, "step only")]["samples_per_s"] > 0
    assert len(result["errors"]) == 2


def test_the_bench_has_the_demo_model_shape():
    """MODEL_SHAPE / TRAIN_CONFIG are the demo's (ml.training_job, which the bench cannot import)."""
    from ml.training_job import ModelHParams, TrainingJob

    h = ModelHParams()
    assert gpu_bench.MODEL_SHAPE == {
        "embedding_dim": h.embedding_dim, "bottom_mlp": h.bottom_mlp, "top_mlp": h.top_mlp,
        "interaction": h.interaction, "dcn_layers": h.dcn_layers, "dropout": h.dropout}
    train = TrainingJob.__dataclass_fields__["train"].default_factory()
    for key, value in gpu_bench.TRAIN_CONFIG.items():
        if key != "fused":  # the demo trains TorchRec fused; the bench's reference model cannot
            assert getattr(train, key) == value, key
    assert not h.include_ids  # so default_spec() without ids is the demo's feature set
