"""Each reader on a few literal rows: layouts, auto-detection, folders, globs, hive partitions."""

from __future__ import annotations

import pytest

from pipeline.errors import InputError
from tests.conftest import profile_of, write_csv, write_jsonl, write_parquet


def test_azure_layout_datetimes_as_utc(tmp_path):
    rows = [
        "2023-11-16 18:15:46.6805900,374,44",
        "2023-11-16 18:15:50.9951690,396,109",
        "2023-11-16 18:16:46.6805900,10,1",
    ]
    path = write_csv(tmp_path / "AzureLLMInferenceTrace_conv.csv", "TIMESTAMP,ContextTokens,GeneratedTokens", rows)
    prof, ing = profile_of(path, tmp_path)
    assert ing.layout.name == "azure" and ing.timestamp_unit == "datetime"
    # 2023-11-16T18:15:46.68059Z is epoch 1700158546.68059 (computed with `date -u -d`)
    assert prof["first_arrival_s"] == 1700158546.681
    assert prof["span_s"] == 60.0
    assert prof["input_tokens"]["max"] == 396 and prof["output_tokens"]["p50"] == 44


def test_burstgpt_excludes_failed_and_tiers_by_model(tmp_path):
    header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
    rows = [
        "5,ChatGPT,472,18,490,Conversation log",
        "45,ChatGPT,1087,0,1087,Conversation log",
        "118,GPT-4,417,276,693,API log",
        "130,ChatGPT,300,20,320,API log",
    ]
    path = write_csv(tmp_path / "BurstGPT_1.csv", header, rows)
    prof, ing = profile_of(path, tmp_path, max_failed_share=0.5)
    assert ing.layout.name == "burstgpt"
    assert prof["requests"] == 3 and prof["failed_requests_excluded"] == 1
    assert prof["warnings"][0]["code"] == "failed_requests_excluded"
    assert "1 of 4 requests (25.00%) have 0 output tokens" in prof["warnings"][0]["message"]
    assert {k: v["requests"] for k, v in prof["tiers"].items()} == {"ChatGPT": 2, "GPT-4": 1}


def test_mooncake_ms_and_hash_ids(tmp_path):
    rows = [
        {"timestamp": 0, "input_length": 1024, "output_length": 10, "hash_ids": [0, 1]},
        {"timestamp": 1500, "input_length": 1536, "output_length": 20, "hash_ids": [0, 1, 2]},
        {"timestamp": 2500, "input_length": 600, "output_length": 30, "hash_ids": [3, 4]},
    ]
    path = write_jsonl(tmp_path / "trace.jsonl", rows)
    prof, ing = profile_of(path, tmp_path)
    assert ing.layout.name == "mooncake" and ing.timestamp_unit == "ms"
    assert prof["span_s"] == 2.5
    assert prof["prefix_reuse"]["blocks_total"] == 7 and prof["prefix_reuse"]["blocks_distinct"] == 5
    assert prof["prefix_reuse"]["block_tokens"] == 512


def test_generic_csv_with_mapping_and_ms_detection(tmp_path):
    rows = ["1700000000000,100,10,acme", "1700000001500,200,20,acme", "1700000003000,300,30,globex"]
    path = write_csv(tmp_path / "log.csv", "ts,prompt,completion,customer", rows)
    mapping = {"arrival_s": "ts", "input_tokens": "prompt", "output_tokens": "completion", "tenant": "customer"}
    prof, ing = profile_of(path, tmp_path, columns=mapping)
    assert ing.timestamp_unit == "ms"
    assert prof["first_arrival_s"] == 1_700_000_000 and prof["span_s"] == 3.0
    assert prof["input_tokens"]["p50"] == 200
    assert prof["tiers_from"] == "column 'tenant' of the log"


def test_generic_jsonl_and_explicit_seconds(tmp_path):
    rows = [
        {"arrival_s": 10.5, "input_tokens": 7, "output_tokens": 3},
        {"arrival_s": 11.5, "input_tokens": 9, "output_tokens": 5},
    ]
    path = write_jsonl(tmp_path / "log.ndjson", rows)
    prof, ing = profile_of(path, tmp_path, timestamp_unit="s")
    assert ing.layout.name == "generic"
    assert prof["requests"] == 2 and prof["span_s"] == 1.0 and prof["input_tokens"]["mean"] == 8


def test_hive_partitioned_parquet_folder(tmp_path):
    for tenant, start in (("acme", 0.0), ("globex", 100.0)):
        write_parquet(
            tmp_path / "logs" / f"tenant={tenant}" / "part-0.parquet",
            {"arrival_s": [start, start + 1], "input_tokens": [10, 20], "output_tokens": [1, 2]},
        )
    prof, ing = profile_of(tmp_path / "logs", tmp_path)
    assert ing.source.hive and len(ing.source.files) == 2
    assert prof["requests"] == 4 and prof["span_s"] == 101
    assert {k: v["requests"] for k, v in prof["tiers"].items()} == {"acme": 2, "globex": 2}


def test_glob_and_pattern_select_files(tmp_path):
    for i in range(3):
        write_csv(tmp_path / "logs" / f"day{i}.csv", "arrival_s,input_tokens,output_tokens", [f"{i * 10},5,5"])
    write_csv(tmp_path / "logs" / "other.csv", "arrival_s,input_tokens,output_tokens", ["1000,5,5"])
    prof, _ = profile_of(tmp_path / "logs" / "day*.csv", tmp_path)
    assert prof["requests"] == 3
    prof, _ = profile_of(tmp_path / "logs", tmp_path, pattern="day[01].csv")
    assert prof["requests"] == 2


def test_mixed_formats_in_a_folder_are_refused(tmp_path):
    write_csv(tmp_path / "logs" / "a.csv", "arrival_s,input_tokens,output_tokens", ["0,5,5"])
    write_jsonl(tmp_path / "logs" / "b.jsonl", [{"arrival_s": 1, "input_tokens": 5, "output_tokens": 5}])
    with pytest.raises(InputError, match="mixes file formats"):
        profile_of(tmp_path / "logs", tmp_path)


def test_timezone_offsets_are_converted_to_utc(tmp_path):
    rows = ["2026-01-05T02:00:00+02:00,10,1", "2026-01-05T00:00:30Z,10,1"]
    path = write_csv(tmp_path / "tz.csv", "arrival_s,input_tokens,output_tokens", rows)
    prof, ing = profile_of(path, tmp_path)
    assert ing.timestamp_unit == "datetime"
    assert prof["first_arrival_s"] == 1_767_571_200 and prof["span_s"] == 30
