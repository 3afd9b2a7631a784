"""The deployment sheet (issue 17): vllm serve arguments, replicas, guardrails and autoscaling of the adopted plan.

Unit tests build the sheet from small metrics documents written here, whose answers are worked by hand; the
stage test runs the real stage on the frozen sample metrics (tests/data/metrics) in a temp root; the e2e test
reads the hostile session run (tests/test_security.py), whose tier name is a Markdown/JS payload.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import deploy, validation
from pipeline.errors import InputError
from tests.conftest import METRICS_FIXTURE, ROOT
from tests.test_security import hostile  # noqa: F401  (the session's shared hostile run: a fixture)

ENGINE = {"gpu_memory_utilization": 0.9, "max_num_batched_tokens": 8192, "max_num_seqs": 256, "block_size": 16}
REPOS = {"Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct"}


def _hours(counts: list[int]) -> list[dict]:
    return [{"hour": f"{h:02d}", "rps": 0.5 * c, "instances": c} for h, c in enumerate(counts)]


def docs(**over):
    """One routed tier `chat`: Llama-3.1-8B on L40S, int8 weights, bf16 KV, TP 2 x PP 1, 6 instances."""
    fleet = {
        "plan": "routed",
        "total_gpus": 12,
        "gpus_by_type": {"L40S": 12},
        "per_tier": {
            "chat": {
                "model": "Llama-3.1-8B",
                "gpu": "L40S",
                "weight_dtype": "int8",
                "kv_dtype": "bf16",
                "tp": 2,
                "pp": 1,
                "total_instances": 6,
                "gpus_per_instance": 2,
                "formula": "ceil(...) = 6 instances",
                "synthetic_curve": False,
                "cold_start": {"seconds": 40.2},
                "schedule": {"hours": _hours([2, 3, 5]), "min_instances": 2, "peak_instances": 5},
                "guardrails": {
                    "max_input_tokens": 20000,
                    "circuit_breaker_queue_depth": 4,
                    "formula": "max_input_tokens = 2.5 x p95 input 8000; queue depth = 0.8 x (2 s TTFT SLO x 2.5 req/s)",
                },
            }
        },
    }
    op = {
        "per_tier": {
            "chat": {
                "load_kind": "concurrency",
                "c_max": 70.9,
                "usable_rps": 2.0,
                "manifest": {
                    "file": "data/raw/benchmarks/x/manifest.yaml",
                    "notes": "vllm serve --max-num-seqs 64 --max-num-batched-tokens 2048",
                },
                "recommendations": [
                    {"name": "prefix_caching", "verdict": "not recommended", "evidence": "4% reuse"},
                    {"name": "speculative_decoding", "verdict": "recommended", "action": "add a draft model"},
                ],
            }
        }
    }
    memory = {
        "candidates": {
            "chat/L40S/w-int8/kv-bf16": {
                "max_concurrency_per_replica": 90,
                "engine": {"gpu_memory_utilization": 0.92, "block_size": 16, "estimated_max_model_len": 131072},
            }
        }
    }
    workload = {"tiers": {"chat": {"context_tokens": {"p99": 5000.4}}}, "context_tokens": {"p99": 9000}}
    val = {"metrics": {"queue_depth": {"target": "~0 (mean <= 1 queued request per server)"}}}
    d = {"fleet": fleet, "op": op, "memory": memory, "workload": workload, "validation": val}
    d.update(over)
    return d


def build(d=None):
    d = d or docs()
    return deploy.build(
        d["fleet"], d["op"], d["memory"], d["workload"], d["validation"], REPOS, ENGINE, validation.BANDS
    )


def args_of(t):
    return {a["flag"]: a["value"] for a in t["args"]}


def test_serve_arguments_worked_by_hand():
    t = build()["tiers"]["chat"]
    a = args_of(t)
    assert t["model"]["value"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert a["--tensor-parallel-size"] == 2 and a["--pipeline-parallel-size"] == 1
    assert a["--max-model-len"] == 5008  # p99 context 5000.4 -> 313 blocks of 16 = 5008
    assert a["--gpu-memory-utilization"] == 0.92  # the engine profile, not the params default 0.9
    assert a["--max-num-seqs"] == 64  # floor(C_max 70.9) = 70, but the benchmark itself ran with 64
    assert a["--max-num-batched-tokens"] == 2048  # the benchmark's flag, not the 8192 default
    assert a["--kv-cache-dtype"] == "auto"  # bf16 KV: the model's dtype
    assert "--quantization" not in a  # int8 weights: a pre-quantized checkpoint, named in the notes
    assert a["--no-enable-prefix-caching"] is True and "--enable-prefix-caching" not in a
    assert list(a)[:3] == ["--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len"]
    assert t["command"] == (
        "vllm serve meta-llama/Llama-3.1-8B-Instruct --tensor-parallel-size 2 --pipeline-parallel-size 1 "
        "--max-model-len 5008 --gpu-memory-utilization 0.92 --max-num-seqs 64 --max-num-batched-tokens 2048 "
        "--kv-cache-dtype auto --no-enable-prefix-caching"
    )
    notes = " ".join(t["notes"])
    assert "W8A8" in notes and "speculative decoding" in notes
    # step 11's 2.5 x p95 input (20,000) is above what vLLM accepts: the gateway limit is capped at --max-model-len
    assert "lowered from step 11's 20,000 tokens to --max-model-len 5,008" in notes


def test_every_value_names_its_step_and_figure():
    t = build()["tiers"]["chat"]
    src = {a["flag"]: a["source"] for a in t["args"]}
    assert (
        "step 1" in src["--max-model-len"]
        and "5,000.4" in src["--max-model-len"]
        and "tiers.chat.context_tokens.p99" in src["--max-model-len"]
    )
    assert (
        "step 10" in src["--max-num-seqs"]
        and "70.9" in src["--max-num-seqs"]
        and "per_tier.chat.c_max" in src["--max-num-seqs"]
    )
    assert "step 4" in src["--gpu-memory-utilization"] and "chat/L40S/w-int8/kv-bf16" in src["--gpu-memory-utilization"]
    assert "step 8" in src["--no-enable-prefix-caching"]
    values = [t["model"], t["gpu"], *t["replicas"].values(), *t["gateway"].values(), *t["autoscaling"].values()]
    assert all(x["source"].startswith("step ") for x in [*t["args"], *values]), [x["source"] for x in values]


def test_replicas_gateway_and_autoscaling():
    t = build()["tiers"]["chat"]
    r, g, s = t["replicas"], t["gateway"], t["autoscaling"]
    assert (r["static"]["value"], r["min"]["value"], r["peak"]["value"]) == (6, 2, 5)
    assert [h["replicas"] for h in r["by_hour"]["value"]] == [2, 3, 5]
    assert r["scale_up_lead_s"]["value"] == 41  # ceil(40.2 s cold start)
    assert g["max_input_tokens"]["value"] == 5008 and g["circuit_breaker_queue_depth"]["value"] == 4
    assert g["max_input_tokens"]["source"].startswith("step 11 capped by step 1: step 11: max_input_tokens = 2.5 x p95")
    # step 13's targets (validation.BANDS): queue depth <= 1 per server, KV usage 75-90 %
    assert s["scale_up_queue_depth_per_replica"]["value"] == 1
    assert (s["scale_down_kv_cache_usage_pct"]["value"], s["scale_up_kv_cache_usage_pct"]["value"]) == (75, 90)
    assert "metrics/validation.json metrics.queue_depth.target" in s["scale_up_queue_depth_per_replica"]["source"]
    assert "pipeline/validation.py BANDS" in s["scale_up_kv_cache_usage_pct"]["source"]  # not in this validation.json
    assert (s["min_replicas"]["value"], s["max_replicas"]["value"]) == (2, 6)


def test_prefix_caching_fp8_and_an_open_loop_curve():
    d = docs()
    tier = d["fleet"]["per_tier"]["chat"]
    tier.update(weight_dtype="fp8", kv_dtype="fp8", schedule=None, schedule_note="the log spans 20 min")
    d["memory"]["candidates"] = {"chat/L40S/w-fp8/kv-fp8": {"max_concurrency_per_replica": 48, "engine": {}}}
    t_op = d["op"]["per_tier"]["chat"]
    t_op.update(load_kind="rate", c_max=3.5, manifest={})
    t_op["recommendations"][0] = {
        "name": "prefix_caching",
        "verdict": "recommended",
        "evidence": "35% reuse",
        "warning": "route by prefix",
    }
    t = build(d)["tiers"]["chat"]
    a = args_of(t)
    assert a["--kv-cache-dtype"] == "fp8" and a["--quantization"] == "fp8"
    assert a["--enable-prefix-caching"] is True and "--no-enable-prefix-caching" not in a
    assert a["--max-num-seqs"] == 48  # an open-loop C_max is a rate: the KV cache's concurrency (step 4)
    assert "step 4" in {x["flag"]: x for x in t["args"]}["--max-num-seqs"]["source"]
    assert a["--gpu-memory-utilization"] == 0.9  # no engine profile: params engine
    assert a["--max-num-batched-tokens"] == 8192  # no flag in the (empty) manifest
    assert t["replicas"]["by_hour"]["value"] is None and t["replicas"]["min"]["value"] == 6
    assert "the log spans 20 min" in t["replicas"]["by_hour"]["source"]
    assert "route by prefix" in " ".join(t["notes"])


def test_the_pooled_plan_reads_the_top_level_operating_point():
    d = docs()
    d["fleet"]["plan"] = "pooled"
    d["fleet"]["per_tier"] = {"all": d["fleet"]["per_tier"].pop("chat")}
    d["op"] = {**d["op"].pop("per_tier")["chat"], "c_max": 33.2, "per_tier": {}}
    d["memory"]["candidates"] = {"all/L40S/w-int8/kv-bf16": d["memory"]["candidates"]["chat/L40S/w-int8/kv-bf16"]}
    t = build(d)["tiers"]["all"]
    assert args_of(t)["--max-num-seqs"] == 33 and args_of(t)["--max-model-len"] == 9008  # pooled p99 9000 -> 563 x 16
    assert t["file"] == "data/deploy/all.yaml"


def test_yaml_round_trips_with_a_source_comment_per_value():
    t = build()["tiers"]["chat"]
    text = deploy.to_yaml(t)
    assert text == deploy.to_yaml(t)  # same sheet, same bytes
    y = yaml.safe_load(text)
    assert y["tier"] == "chat" and y["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert y["serve"]["args"] == [w for a in t["args"] for w in deploy.argv(a)]
    assert y["serve"]["args"][:4] == ["--tensor-parallel-size", "2", "--pipeline-parallel-size", "1"]
    assert y["replicas"]["by_hour"] == {"00": 2, "01": 3, "02": 5} and y["replicas"]["static"] == 6
    assert y["gateway"] == {"max_input_tokens": 5008, "circuit_breaker_queue_depth": 4}
    assert y["autoscaling"]["scale_up_kv_cache_usage_pct"] == 90
    for line in text.splitlines():
        if line.lstrip().startswith('- "--') or line.startswith(("gpu:", "model:", "  static:", "  max_input_tokens:")):
            assert "  # step " in line, line


def test_hostile_names_stay_text_in_yaml_html_and_paths():
    link, svg = "[click](javascript:alert(7))", "<svg onload=alert(2)>"
    d = docs()
    d["fleet"]["per_tier"] = {link: d["fleet"]["per_tier"].pop("chat")}
    d["fleet"]["per_tier"][link]["model"] = svg
    d["op"]["per_tier"] = {link: d["op"]["per_tier"].pop("chat")}
    d["workload"]["tiers"] = {link: d["workload"]["tiers"].pop("chat")}
    t = build(d)["tiers"][link]
    assert t["file"].startswith("data/deploy/click-javascript-alert-7-") and t["file"].endswith(".yaml")
    assert "/" not in t["file"].removeprefix("data/deploy/")
    assert yaml.safe_load(deploy.to_yaml(t))["tier"] == link
    assert t["command"].startswith("vllm serve '<svg onload=alert(2)>' ")  # quoted for the shell
    html = deploy.table_html(("a", "b"), deploy.args_rows(t)) + deploy.command_html(t)
    assert "<svg" not in html and "&lt;svg onload=alert(2)&gt;" in html
    assert deploy.file_stem("large") == "large" and deploy.file_stem("a/b") != deploy.file_stem("a-b")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["fleet"]["per_tier"]["chat"].pop("tp"),
            "metrics/fleet.json: per_tier.chat.tp: got None; expected a number",
        ),
        (
            lambda d: d["fleet"]["per_tier"]["chat"].update(kv_dtype="fp32"),
            "metrics/fleet.json: per_tier.chat.kv_dtype: 'fp32' has no vLLM --kv-cache-dtype",
        ),
        (lambda d: d["op"]["per_tier"].clear(), "metrics/operating_point.json: per_tier.chat: missing"),
        (
            lambda d: d["workload"]["tiers"]["chat"].update(context_tokens={}),
            "metrics/workload.json: tiers.chat.context_tokens.p99: got None",
        ),
        (lambda d: d["fleet"]["per_tier"].clear(), "metrics/fleet.json: per_tier: missing or empty"),
        (
            lambda d: d["fleet"]["per_tier"]["chat"]["guardrails"].pop("max_input_tokens"),
            "metrics/fleet.json: per_tier.chat.guardrails.max_input_tokens: got None",
        ),
    ],
)
def test_bad_metrics_are_one_clear_error(change, message):
    d = docs()
    change(d)
    with pytest.raises(InputError) as err:
        build(d)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def _root(tmp_path: Path) -> Path:
    (tmp_path / "metrics").mkdir()
    for name in ("fleet", "operating_point", "memory", "workload", "validation"):
        shutil.copy(METRICS_FIXTURE / f"{name}.json", tmp_path / "metrics" / f"{name}.json")
    (tmp_path / "data" / "catalog").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "catalog" / "models.csv", tmp_path / "data" / "catalog" / "models.csv")
    return tmp_path


def test_the_stage_writes_a_yaml_per_tier_byte_identical_on_rerun(tmp_path):
    from pipeline.layout import Layout
    from pipeline.stages import deploy as stage

    root = _root(tmp_path)
    (root / "data" / "deploy").mkdir()
    (root / "data" / "deploy" / "gone.yaml").write_text("tier: gone\n")  # a tier no longer in the plan
    sheet = stage.run({}, Layout(root))
    fleet = json.loads((root / "metrics" / "fleet.json").read_text())
    files = sorted(p.name for p in (root / "data" / "deploy").iterdir())
    assert files == sorted(f"{t}.yaml" for t in fleet["per_tier"])  # the stale file is gone
    assert json.loads((root / "metrics" / "deploy.json").read_text()) == sheet
    for tier, t in fleet["per_tier"].items():
        y = yaml.safe_load((root / "data" / "deploy" / f"{tier}.yaml").read_text())
        assert y["serve"]["args"][y["serve"]["args"].index("--tensor-parallel-size") + 1] == str(t["tp"])
        assert y["replicas"]["static"] == t["total_instances"]
        max_len = int(y["serve"]["args"][y["serve"]["args"].index("--max-model-len") + 1])
        assert y["gateway"]["max_input_tokens"] == min(t["guardrails"]["max_input_tokens"], max_len)
    before = {p: p.read_bytes() for p in [*(root / "data" / "deploy").iterdir(), root / "metrics" / "deploy.json"]}
    stage.run({}, Layout(root))
    assert {p: p.read_bytes() for p in before} == before


def test_a_bad_input_writes_nothing(tmp_path):
    from pipeline.layout import Layout
    from pipeline.stages import deploy as stage

    root = _root(tmp_path)
    fleet = json.loads((root / "metrics" / "fleet.json").read_text())
    last = sorted(fleet["per_tier"])[-1]
    del fleet["per_tier"][last]["guardrails"]  # the last tier is bad: the first must not be written either
    (root / "metrics" / "fleet.json").write_text(json.dumps(fleet))
    with pytest.raises(InputError, match=f"per_tier.{last}.guardrails.max_input_tokens"):
        stage.run({}, Layout(root))
    assert not (root / "data" / "deploy").exists() and not (root / "metrics" / "deploy.json").exists()


@pytest.mark.e2e
def test_the_pipeline_writes_the_sheet_for_the_adopted_plan(hostile):  # noqa: F811
    """The hostile session run (tests/test_security.py): the payload tier gets a slugged file holding its name as text."""
    from tests.test_security import LINK

    fleet = json.loads((hostile / "metrics" / "fleet.json").read_text())
    sheet = json.loads((hostile / "metrics" / "deploy.json").read_text())
    assert set(sheet["tiers"]) == set(fleet["per_tier"]) and LINK in sheet["tiers"]
    for tier, t in sheet["tiers"].items():
        path = hostile / t["file"]
        y = yaml.safe_load(path.read_text())
        assert y["tier"] == tier and path.parent == hostile / "data" / "deploy"
        assert y["replicas"]["static"] == fleet["per_tier"][tier]["total_instances"]
    assert sorted(p.name for p in (hostile / "data" / "deploy").iterdir()) == sorted(
        Path(t["file"]).name for t in sheet["tiers"].values()
    )
    html = (hostile / "reports" / "deploy.html").read_text()
    assert "<title>Deployment sheet" in html and "--tensor-parallel-size" in html


# --- review: the adopted TP's engine profile; --max-num-seqs per replica of a multi-replica benchmark ---------------


def _at_tp1():
    """memory.json sized chat/L40S/w-int8/kv-bf16 at TP 1 (its profile: 0.92, 90 requests); the fleet runs TP 2."""
    d = docs()
    entry = d["memory"]["candidates"]["chat/L40S/w-int8/kv-bf16"]
    entry.update(tp=1, pp=1, context_tokens_p95=4000.0)
    return d


def test_a_fleet_at_another_tp_does_not_take_the_memory_stages_profile():
    t = build(_at_tp1())["tiers"]["chat"]
    a = args_of(t)
    assert a["--gpu-memory-utilization"] == 0.9  # params default: the TP 1 profile's 0.92 is not this fleet's
    assert t["candidate"] is None
    assert any("sizes chat/L40S/w-int8/kv-bf16 at TP 1 x PP 1; the fleet runs TP 2 x PP 1" in n for n in t["notes"])


def test_a_fleet_at_another_tp_recomputes_the_profile_at_its_tp():
    seen = []

    def at(model, gpu, weights, kv, tp, pp, ctx):
        seen.append((model, gpu, weights, kv, tp, pp, ctx))
        return {"gpu_memory_utilization": 0.88, "block_size": 16, "max_concurrency_per_replica": 40}

    d = _at_tp1()
    sheet = deploy.build(
        d["fleet"], d["op"], d["memory"], d["workload"], d["validation"], REPOS, ENGINE, validation.BANDS, at
    )
    t = sheet["tiers"]["chat"]
    a = args_of(t)
    assert seen == [("Llama-3.1-8B", "L40S", "int8", "bf16", 2, 1, 4000.0)]
    assert a["--gpu-memory-utilization"] == 0.88 and t["candidate"] == "chat/L40S/w-int8/kv-bf16/tp2"
    src = next(x["source"] for x in t["args"] if x["flag"] == "--gpu-memory-utilization")
    assert "engine_profile of chat/L40S/w-int8/kv-bf16/tp2 at TP 2 x PP 1" in src
    # the recomputed KV cache holds 40 at the p95 context, below --max-num-seqs 64: the preemption note names it
    assert any("above the 40 requests the KV cache holds" in n for n in t["notes"])
    # memory.json's own entry for the adopted id wins over a recompute
    d["memory"]["candidates"]["chat/L40S/w-int8/kv-bf16/tp2"] = {"tp": 2, "engine": {"gpu_memory_utilization": 0.8}}
    t = build(d)["tiers"]["chat"]
    assert args_of(t)["--gpu-memory-utilization"] == 0.8 and t["candidate"] == "chat/L40S/w-int8/kv-bf16/tp2"


def test_the_stage_recomputes_the_engine_profile_with_pipeline_memory():
    from pipeline import catalog, memory, parallelism
    from pipeline.layout import Layout
    from pipeline.stages import deploy as deploy_stage

    at = deploy_stage.profile_at(Layout(ROOT), ENGINE)
    got = at("Llama-3.1-70B", "H100-SXM", "fp8", "fp8", 8, 1, 8117.0)
    m, g = catalog.load_model("Llama-3.1-70B", ROOT), catalog.load_gpus(ROOT)["H100-SXM"]
    want = memory.engine_profile(
        m, g, "fp8", "fp8", 8, 1, parallelism.expert_parallel(m, 8), 8117.0, memory.EngineSettings.from_params(ENGINE)
    )
    assert got["max_concurrency_per_replica"] == want.max_concurrency_per_replica and got["fits"]
    four = at("Llama-3.1-70B", "H100-SXM", "fp8", "fp8", 4, 1, 8117.0)
    assert got["max_concurrency_per_replica"] > four["max_concurrency_per_replica"]  # twice the GPUs, more KV
    assert at("No-Such-Model", "H100-SXM", "fp8", "fp8", 8, 1, 8117.0) is None


def test_max_num_seqs_is_per_replica_when_the_benchmark_ran_several():
    d = docs()
    man = d["op"]["per_tier"]["chat"]["manifest"]
    man.update(gpu_count=8, tp=2, pp=1, notes="vllm serve --max-num-seqs 256")
    t = build(d)["tiers"]["chat"]
    # C_max 70.9 over 8 GPUs / TP 2 = 4 replicas: 17.725 per replica -> 17 (not 70)
    assert args_of(t)["--max-num-seqs"] == 17
    src = next(x["source"] for x in t["args"] if x["flag"] == "--max-num-seqs")
    assert "over the benchmark's 4 replicas" in src and "gpu_count 8 / (tp 2 x pp 1)" in src
    # the curve's own replicas_in_benchmark (operating_point.json curves.<curve>) wins over the manifest
    d["op"]["per_tier"]["chat"]["curve"] = "x (closed loop)"
    d["op"]["curves"] = {"x (closed loop)": {"replicas_in_benchmark": 2}}
    assert args_of(build(d)["tiers"]["chat"])["--max-num-seqs"] == 35  # 70.9 / 2 = 35.45
