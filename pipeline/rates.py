"""The one list of arrival-rate names (step 1): what `metrics/workload.json` `rps` holds and what
`workload.sizing_rate` / `fleet.burst_rate` may name. Every module imports it from here."""

from __future__ import annotations

from enum import StrEnum


class RateName(StrEnum):
    """An arrival-rate statistic of the traffic log, in requests per second."""

    MEAN = "mean"  # requests / span
    PER_SECOND_P95 = "per_second_p95"  # p95 of arrivals per 1-s bucket
    PER_SECOND_P99 = "per_second_p99"  # p99 of arrivals per 1-s bucket
    PER_MINUTE_P95 = "per_minute_p95"  # p95 of arrivals per 60-s bucket / 60
    PER_MINUTE_P99 = "per_minute_p99"  # p99 of arrivals per 60-s bucket / 60
    PEAK_1S = "peak_1s"  # the busiest single second


RATE_DEFINITIONS: dict[str, str] = {  # how each is computed, in the order of RATE_NAMES (the step 1 report's table)
    RateName.MEAN.value: "requests / (last - first arrival)",
    RateName.PER_SECOND_P95.value: "p95 of arrivals per 1-s bucket (empty = 0)",
    RateName.PER_SECOND_P99.value: "p99 of arrivals per 1-s bucket",
    RateName.PER_MINUTE_P95.value: "p95 of arrivals per 60-s bucket / 60",
    RateName.PER_MINUTE_P99.value: "p99 of arrivals per 60-s bucket / 60",
    RateName.PEAK_1S.value: "busiest single second",
}
RATE_NAMES: tuple[str, ...] = tuple(r.value for r in RateName)  # in the order the profile writes them
BURST_RATES: tuple[str, ...] = RATE_NAMES[1:]  # a burst is a peak: every rate but the mean
SIZING_RATE_KEY = "sizing_rate"  # the rate the fleet is sized for, copied under this key in `rps`
