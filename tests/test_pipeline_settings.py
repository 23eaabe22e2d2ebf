"""The runtime reads the pipeline's settings from the config once (`pipeline_settings`),
and the pipeline it builds runs with them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from trailproc._config import Config
from trailproc._observe import Metrics
from trailproc._pipeline.fetch import LocalFetcher
from trailproc._pipeline.keys import FileRef, KeyInfo, ObjectKind
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor
from trailproc._runtime import build_pipeline, default_owner, pipeline_settings
from trailproc._sandbox import encode_log, make_records
from trailproc.checkpoint._memory import MemoryStore


def test_each_pipeline_setting_comes_from_its_config_key() -> None:
    config = Config(worker_id="worker-1", max_events_per_emit=7, max_decompressed_bytes=5_000_000,
                    visibility_timeout=120, handlers_in_thread=False,
                    filter_event_names=["GetObject"])  # fmt: skip
    settings = pipeline_settings(config)
    assert (settings.owner, settings.max_events_per_emit, settings.max_decompressed_bytes,
            settings.lease_seconds, settings.handlers_in_thread) == (
        "worker-1", 7, 5_000_000, 120.0, False)  # fmt: skip
    assert settings.record_filter is not None
    assert settings.record_filter.event_names == ("GetObject",)


def test_the_lease_is_never_shorter_than_30_seconds_and_the_owner_defaults_to_host_and_pid() -> (
    None
):
    settings = pipeline_settings(Config(visibility_timeout=10))
    assert settings.lease_seconds == 30.0
    assert settings.owner == default_owner()
    assert settings.record_filter is not None and not settings.record_filter.active


class Batches(EventProcessor):
    never_blocks = True

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def process(self, events: list[Any]) -> None:
        self.sizes.append(len(events))


def test_the_built_pipeline_hands_over_batches_of_its_configured_size(tmp_path: Path) -> None:
    path = tmp_path / "one.json.gz"
    path.write_bytes(encode_log(make_records(7, seed=3)))
    config = Config(worker_id="worker-2", max_events_per_emit=3, handlers_in_thread=False)
    user = Batches()
    pipeline = build_pipeline(config, user, MemoryStore(), LocalFetcher(),
                              PipelineObserver(user, Metrics()))  # fmt: skip
    ref = FileRef(bucket="", key=str(path), info=KeyInfo(ObjectKind.LOG))

    async def scenario() -> str:
        try:
            return (await pipeline.run(ref)).status
        finally:
            await pipeline.close()

    assert asyncio.run(scenario()) == "done"
    assert user.sizes == [3, 3, 1]
    assert pipeline.owner == "worker-2"
