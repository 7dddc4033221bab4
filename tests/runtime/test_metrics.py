"""Metric names, and the HPA signal math: falls to 0 when idle, never NaN."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tts_runtime.metrics import RuntimeMetrics, average_queue_wait

NAMES = {
    "tts_requests",
    "tts_queue_wait_seconds",
    "tts_queue_depth",
    "tts_batch_size",
    "tts_inference_seconds",
    "tts_padding_ratio",
    "tts_audio_seconds",
    "tts_real_time_factor",
    "tts_model_info",
}


def scrape(metrics: RuntimeMetrics) -> dict[str, float]:
    samples = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_exposes_the_agreed_series() -> None:
    metrics = RuntimeMetrics(max_batch_size=8)
    metrics.set_model("tts-1", "CPUExecutionProvider", "fp32")
    families = {f.name for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert families >= NAMES
    samples = scrape(metrics)
    assert samples["tts_model_info{model=tts-1,precision=fp32,provider=CPUExecutionProvider}"] == 1
    assert samples["tts_requests_total{status=ok}"] == 0  # present before the first request
    assert "tts_audio_seconds_total" in samples
    assert samples["tts_queue_wait_seconds_count"] == 0


def test_batch_size_buckets_end_at_the_max_batch_size() -> None:
    samples = scrape(RuntimeMetrics(max_batch_size=12))
    buckets = [k for k in samples if k.startswith("tts_batch_size_bucket")]
    assert "tts_batch_size_bucket{le=12.0}" in buckets
    assert "tts_batch_size_bucket{le=16.0}" not in buckets


def quotient(before: dict[str, float], after: dict[str, float]) -> float:
    return average_queue_wait(
        before["tts_queue_wait_seconds_sum"],
        before["tts_queue_wait_seconds_count"],
        after["tts_queue_wait_seconds_sum"],
        after["tts_queue_wait_seconds_count"],
    )


def test_hpa_signal_follows_load_and_falls_to_zero_when_idle() -> None:
    metrics = RuntimeMetrics()
    first = scrape(metrics)
    for wait in (0.1, 0.2, 0.3):
        metrics.queue_wait.observe(wait)
    busy = scrape(metrics)
    assert quotient(first, busy) == pytest.approx(0.2)
    metrics.queue_wait.observe(0.01)
    calmer = scrape(metrics)
    assert quotient(busy, calmer) == pytest.approx(0.01)
    idle = scrape(metrics)  # no segment between the scrapes
    signal = quotient(calmer, idle)
    assert signal == 0.0 and not math.isnan(signal)
    # Never-used runtime: 0/0 would be NaN, the clamp makes it 0.
    fresh = scrape(RuntimeMetrics())
    assert quotient(fresh, fresh) == 0.0
