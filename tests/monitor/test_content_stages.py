"""The monitor's content stages (p2pwatch/monitor/content_queue.py): following the registry in place."""

from __future__ import annotations

import random

from p2pwatch.config import MonitorConfig
from p2pwatch.investigate.registry_sync import Applied
from p2pwatch.match.matcher import RegisteredContent, RegistryIndex
from p2pwatch.match.triage import RegistryProfile
from p2pwatch.monitor.content_queue import ContentStages
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_video


def _item(rng: random.Random, size: int) -> RegisteredContent:
    fp = synthetic_fingerprint(rng, size, synthetic_video(rng, 4))
    return RegisteredContent(fp.fingerprint_id, "case", fp)


def test_a_change_in_place_is_applied_to_the_triage_not_rebuilt() -> None:
    rng = random.Random(3)
    config = MonitorConfig()
    stages = ContentStages(config, Metrics(), bind_ip=None, allow_local=True)
    first, second = _item(rng, 40_000), _item(rng, 41_000)
    index = RegistryIndex([first])
    stages.update_index(index)
    screening = stages.screening
    stages.update_index(index)  # the same index, unchanged: nothing happens
    assert stages.screening is screening

    index.add(second)
    stages.update_index(index, applied=Applied(added=[second]))
    index.remove(first.content_id)
    stages.update_index(index, applied=Applied(removed=[first]))
    assert stages.screening is screening  # followed, not rebuilt
    rules = screening.triage.settings
    assert screening.triage.profile.snapshot() == RegistryProfile.build(index, rules).snapshot()
    assert set(screening.triage.profile.sizes) == {41_000}

    stages.update_index(RegistryIndex([first]))  # a new index: built from it
    assert stages.screening is not screening and set(stages.screening.triage.profile.sizes) == {40_000}
