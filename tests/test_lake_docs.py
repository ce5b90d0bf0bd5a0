"""docs/ai-sink.md: its minimal loader runs against a lake and yields each subject's events in
time order; the page names every lake metric and config key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import warehouse_events as ev
from lake_helpers import append, open_lake, subject_rows
from prometheus_client.metrics import MetricWrapperBase

from hl7bus.connectors.lake import metrics
from hl7bus.connectors.lake.compaction import compact
from hl7bus.connectors.lake.config import LakeConfig

DOC = Path(__file__).parent.parent / "docs" / "ai-sink.md"


def loader_source() -> str:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    [loader] = [block for block in blocks if "def sequences" in block]
    return str(loader)


def test_the_minimal_loader_yields_every_train_subject_in_time_order(
    tmp_path: Path, monkeypatch: Any
) -> None:
    store = open_lake(tmp_path / "lake")
    append(store, [(s, ev.observation()) for s in range(1, 40)])
    append(store, [(s, ev.patient()) for s in range(1, 40)])
    compact(store)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(loader_source(), str(DOC), "exec"), namespace)  # prints one line per subject
    found = dict(namespace["sequences"](tmp_path / "lake", "train"))
    train = {
        subject
        for path in (tmp_path / "lake" / "data" / "train").glob("*.parquet")
        for subject in pq.read_table(path)["subject_id"].to_pylist()
    }
    assert set(found) == train and train
    everyone = subject_rows(tmp_path / "lake")
    for subject, events in found.items():
        assert events == everyone[subject]
        assert [code for _, code, _, _ in events][:2] == ["GENDER/M", "MEDS_BIRTH"]


def test_the_page_names_every_metric_and_config_key() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in dir(metrics):
        metric = getattr(metrics, name)
        if isinstance(metric, MetricWrapperBase):
            assert next(iter(metric.describe())).name in text, name
    for key in ("compact_interval_s", "split_key", "split_ratios", "shards_per_split"):
        assert f"lake.{key}" in text
    assert set(LakeConfig.model_fields) >= {"path", "metrics_port"}
