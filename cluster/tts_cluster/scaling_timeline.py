"""A timeline of one TTSService scaling under load: offered load, per-pod queue latency (from
Prometheus, the signal the autoscaler reads), and replicas, sampled every few seconds; plus
the PNG plot of it that docs/benchmarks.md shows (`make scale-demo`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tts_cluster.autoscaling import KEDA_RATE_WINDOW, query


@dataclass
class Sample:
    t: float
    """Seconds since the recording started."""
    replicas: int
    """The Deployment's desired replicas (what the autoscaler set)."""
    ready: int
    """Ready pods."""
    requests_per_s: float
    """Requests finished per second, all pods (Prometheus rate)."""
    queue_latency_s: dict[str, float]
    """Mean queue wait per pod, seconds (the same rate-based query as the trigger, by pod)."""
    service_latency_s: float
    """Mean queue wait of the whole service: exactly what the ScaledObject's trigger reads."""


@dataclass
class Timeline:
    namespace: str
    name: str
    target_s: float
    samples: list[Sample] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)
    """Named moments (load on, load off, ...), seconds since the start."""

    def first(self, what: Callable[[Sample], bool], after: float = 0.0) -> float | None:
        """The time of the first sample at or after `after` for which `what` holds."""
        return next((s.t for s in self.samples if s.t >= after and what(s)), None)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))


def by_pod(trigger_query: str) -> str:
    """The trigger's query (one value for the whole service) split by pod."""
    split = trigger_query.replace("sum(rate(", "sum by (pod) (rate(")
    if split.count("sum by (pod)") != 2:
        raise ValueError(f"not the queue-latency query of a ScaledObject: {trigger_query}")
    return split


def _value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else 0.0


class Recorder:
    """Samples a Timeline in a background thread until `stop`. `trigger_query` is the
    ScaledObject's own PromQL, read back from the cluster: the recorded latency is exactly
    what KEDA saw."""

    def __init__(
        self,
        prometheus_url: str,
        timeline: Timeline,
        trigger_query: str,
        replicas: Callable[[], tuple[int, int]],
        every_s: float = 2.0,
    ) -> None:
        self.prometheus_url, self.timeline, self.replicas = prometheus_url, timeline, replicas
        self.trigger_query, self.per_pod_query = trigger_query, by_pod(trigger_query)
        self.every_s = every_s
        self.start_time = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def now(self) -> float:
        return round(time.monotonic() - self.start_time, 2)

    def mark(self, event: str) -> None:
        self.timeline.events[event] = self.now()

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> Timeline:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.timeline

    def sample(self) -> Sample:
        tl = self.timeline
        per_pod = query(self.prometheus_url, self.per_pod_query)
        matchers = f'namespace="{tl.namespace}",tts_service="{tl.name}"'
        rate = f"sum(rate(tts_requests_total{{{matchers}}}[{KEDA_RATE_WINDOW}]))"
        replicas, ready = self.replicas()
        return Sample(
            t=self.now(),
            replicas=replicas,
            ready=ready,
            requests_per_s=round(_value(query(self.prometheus_url, rate)), 3),
            queue_latency_s={
                r["metric"].get("pod", "?"): round(float(r["value"][1]), 4) for r in per_pod
            },
            service_latency_s=round(_value(query(self.prometheus_url, self.trigger_query)), 4),
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.timeline.samples.append(self.sample())
            except Exception as error:  # a missed sample is reported, not fatal
                self.errors.append(repr(error)[:200])
            self._stop.wait(self.every_s)


def plot(timeline: Timeline, path: Path) -> None:
    """Three stacked panels sharing the time axis: load, queue latency per pod (with the
    target), replicas (desired and ready); the load window shaded in each."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    t = [s.t for s in timeline.samples]
    fig, (load, latency, replicas) = plt.subplots(3, 1, sharex=True, figsize=(9, 7.5))
    load.plot(t, [s.requests_per_s for s in timeline.samples], color="tab:blue")
    load.set_ylabel("requests / s")
    # Pods numbered in the order they appear (pod 1 is the one that was there first).
    pods = list(dict.fromkeys(p for s in timeline.samples for p in s.queue_latency_s))
    for index, pod in enumerate(pods):
        points = [
            (s.t, s.queue_latency_s[pod] * 1000)
            for s in timeline.samples
            if pod in s.queue_latency_s
        ]
        latency.plot(*zip(*points, strict=True), label=f"pod {index + 1}", linewidth=1.2)
    latency.plot(
        t, [s.service_latency_s * 1000 for s in timeline.samples], color="black", linewidth=2,
        label="service mean (trigger)",
    )  # fmt: skip
    latency.axhline(timeline.target_s * 1000, color="tab:red", linestyle="--", label="target")
    latency.set_ylabel("queue wait, ms")
    latency.legend(loc="upper right", fontsize="small", ncol=2)
    replicas.step(t, [s.replicas for s in timeline.samples], where="post", label="desired")
    replicas.step(t, [s.ready for s in timeline.samples], where="post", label="ready")
    replicas.set_ylabel("replicas")
    replicas.set_xlabel("seconds")
    replicas.legend(loc="upper right", fontsize="small")
    on, off = timeline.events.get("load on"), timeline.events.get("load off")
    for axis in (load, latency, replicas):
        if on is not None and off is not None:
            axis.axvspan(on, off, color="tab:orange", alpha=0.12)
        axis.grid(alpha=0.3)
    fig.suptitle(
        f"TTSService {timeline.name}: KEDA scales on queue latency (load shaded)", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
