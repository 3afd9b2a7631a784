"""Reader conformance on the real public traces in ../shared/fixtures (figures from PROVENANCE.md)."""

from __future__ import annotations

from tests.conftest import profile_of


def test_azure_2023_conversation_trace(shared_fixtures, tmp_path):
    prof, ing = profile_of(shared_fixtures / "traces" / "azure2023_conv.csv", tmp_path)
    assert ing.layout.name == "azure"
    assert prof["requests"] == 19_366
    assert round(prof["span_s"]) == 3_502
    assert prof["first_arrival_s"] == 1700158546.681  # 2023-11-16 18:15:46.68 UTC
    inp, out = prof["input_tokens"], prof["output_tokens"]
    assert [round(inp[k]) for k in ("p50", "p90", "p95", "p99")] in ([1020, 2734, 4083, 4142], [1020, 2735, 4083, 4142])
    assert inp["max"] == 14_050
    assert [out[k] for k in ("p50", "p90", "p95", "p99")] == [129, 424, 451, 601]
    assert out["max"] == 1_000
    assert round(prof["rps"]["mean"], 2) == 5.53
    assert prof["failed_requests_excluded"] == 0 and prof["validation"]["success"]


def test_mooncake_synthetic_trace(shared_fixtures, tmp_path):
    prof, ing = profile_of(shared_fixtures / "traces" / "mooncake_synthetic.jsonl", tmp_path)
    assert ing.layout.name == "mooncake"
    assert prof["requests"] == 3_993
    assert round(prof["span_s"]) == 1_022
    inp, out = prof["input_tokens"], prof["output_tokens"]
    assert [round(inp[k]) for k in ("p50", "p95", "p99")] == [11587, 48905, 66456]
    assert inp["max"] == 191_378
    assert [round(out[k]) for k in ("p50", "p95", "p99")] == [69, 519, 768]
    assert prof["archetype"] == "rag"
    assert 0 < prof["prefix_reuse"]["reuse_fraction"] < 1
