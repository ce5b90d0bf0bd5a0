"""`hl7bus warehouse check`: a data-quality subset in the spirit of the OHDSI Data Quality
Dashboard, run as SQL on either engine.

Rules, each counted per table and column (docs/omop-mapping.md, Data quality check):

- ``required``: a column v5.4 requires (NOT NULL) holds no null (DQD isRequired).
- ``foreign_key``: a surrogate id names an existing row (DQD isForeignKey). An id the key map
  has handed out for a person, visit or visit detail whose own event has not arrived yet (a
  result before its patient's registration: normal in a stream) is *pending*, not a
  violation; an id the key map does not know is a violation.
- ``concept``: a concept id other than 0 is in the vocabulary's concept table (DQD
  fkDomain's first half); only with a vocabulary loaded.
- ``before_birth``: no fact starts before its person's birth (DQD plausibleAfterBirth).
- ``after_death``: no fact starts more than 60 days after its person's death
  (DQD plausibleBeforeDeath).
- ``outside_observation_period``: every fact starts inside one of its person's observation
  periods (the OHDSI convention: no data outside observation).

And the rows per table, and per feed (through feeds.py: the rows of each feed's persons).
Every query counts; none returns a value of a row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hl7bus.connectors.warehouse import cdm, feeds, keymap
from hl7bus.connectors.warehouse.changes import PERSON, VISIT, VISIT_DETAIL
from hl7bus.connectors.warehouse.engine import Engine

REQUIRED, FOREIGN_KEY, CONCEPT = "required", "foreign_key", "concept"
BEFORE_BIRTH, AFTER_DEATH, OUTSIDE_PERIOD = (
    "before_birth",
    "after_death",
    "outside_observation_period",
)
RULES = {
    REQUIRED: "a column v5.4 requires holds no null",
    FOREIGN_KEY: "every surrogate id names an existing row (pending: its event has not come yet)",
    CONCEPT: "every concept id other than 0 is in the concept table (with a vocabulary loaded)",
    BEFORE_BIRTH: "no fact starts before its person's birth",
    AFTER_DEATH: "no fact starts more than 60 days after its person's death",
    OUTSIDE_PERIOD: "every fact starts inside one of its person's observation periods",
}
DEATH_GRACE_DAYS = 60

# The tables the sink writes (the vocabulary tables are Athena's, checked by Athena).
CHECKED = tuple(t for t in cdm.TABLES if t not in cdm.VOCABULARY_TABLES)
# Surrogate id column -> (the table it names, the key-map kind whose ids may be pending).
REFERENCES: dict[str, tuple[str, str | None]] = {
    "person_id": ("person", PERSON),
    "visit_occurrence_id": ("visit_occurrence", VISIT),
    "preceding_visit_occurrence_id": ("visit_occurrence", VISIT),
    "visit_detail_id": ("visit_detail", VISIT_DETAIL),
    "preceding_visit_detail_id": ("visit_detail", VISIT_DETAIL),
    "parent_visit_detail_id": ("visit_detail", VISIT_DETAIL),
    "location_id": ("location", None),
    "care_site_id": ("care_site", None),
    "provider_id": ("provider", None),
}
# Each fact table's start date: what the date rules compare.
FACT_DATES = {
    "visit_occurrence": "visit_start_date",
    "visit_detail": "visit_detail_start_date",
    "condition_occurrence": "condition_start_date",
    "drug_exposure": "drug_exposure_start_date",
    "procedure_occurrence": "procedure_date",
    "measurement": "measurement_date",
    "observation": "observation_date",
    "note": "note_date",
    "specimen": "specimen_date",
    "death": "death_date",
}
NO_FEED = ""  # rows of persons no feed was noted for (written before feeds were noted)


@dataclass(frozen=True)
class Finding:
    """One rule on one table column: the rows that break it, and those still pending."""

    rule: str
    table: str
    column: str
    violations: int
    pending: int = 0

    @property
    def passed(self) -> bool:
        return self.violations == 0


@dataclass
class Report:
    findings: list[Finding]
    rows: dict[str, int]  # table -> rows
    feed_rows: dict[str, dict[str, int]]  # feed -> table -> rows of the feed's persons
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it did not run

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rules": {
                rule: {
                    "description": text,
                    "checks": sum(f.rule == rule for f in self.findings),
                    "failed": sum(f.rule == rule and not f.passed for f in self.findings),
                    "violations": sum(f.violations for f in self.findings if f.rule == rule),
                    "pending": sum(f.pending for f in self.findings if f.rule == rule),
                    **({"skipped": self.skipped[rule]} if rule in self.skipped else {}),
                }
                for rule, text in RULES.items()
            },
            "findings": [
                {**asdict(f), "passed": f.passed}
                for f in self.findings
                if f.violations or f.pending
            ],
            "rows": self.rows,
            "feeds": self.feed_rows,
        }


def run(engine: Engine) -> Report:
    """Run every rule and count the rows; reads only."""
    findings = required(engine) + foreign_keys(engine)
    skipped = {}
    if _count(engine, f"SELECT count(*) FROM {engine.table('concept')}"):
        findings += concepts(engine)
    else:
        skipped[CONCEPT] = "no vocabulary loaded"
    findings += before_birth(engine) + after_death(engine) + outside_periods(engine)
    rows = {t: _count(engine, f"SELECT count(*) FROM {engine.table(t)}") for t in CHECKED}
    return Report(findings, rows, feed_rows(engine), skipped)


def required(engine: Engine) -> list[Finding]:
    found = []
    for table in CHECKED:
        columns = [c.name for c in cdm.TABLES[table] if c.required]
        sums = ", ".join(f"SUM(CASE WHEN {c} IS NULL THEN 1 ELSE 0 END)" for c in columns)
        (nulls,) = engine.query(f"SELECT {sums} FROM {engine.table(table)}") or [()]
        found += [
            Finding(REQUIRED, table, c, int(n or 0)) for c, n in zip(columns, nulls, strict=True)
        ]
    return found


def foreign_keys(engine: Engine) -> list[Finding]:
    found = []
    key_map = engine.keys_table(keymap.TABLE)
    for table in CHECKED:
        for column in (c.name for c in cdm.TABLES[table] if not c.pk):
            if column not in REFERENCES:
                continue
            target, kind = REFERENCES[column]
            target_key = next(c.name for c in cdm.TABLES[target] if c.pk)
            missing = (
                f"FROM {engine.table(table)} f LEFT JOIN {engine.table(target)} x "
                f"ON x.{target_key} = f.{column} WHERE f.{column} IS NOT NULL "
                f"AND x.{target_key} IS NULL"
            )
            if kind is None:
                found.append(
                    Finding(
                        FOREIGN_KEY, table, column, _count(engine, f"SELECT count(*) {missing}")
                    )
                )
                continue
            known = f"EXISTS (SELECT 1 FROM {key_map} k WHERE k.id = f.{column} AND k.kind = %s)"
            (violations, pending) = engine.query(
                f"SELECT SUM(CASE WHEN {known} THEN 0 ELSE 1 END), "
                f"SUM(CASE WHEN {known} THEN 1 ELSE 0 END) {missing}",
                [kind, kind],
            )[0]
            found.append(
                Finding(FOREIGN_KEY, table, column, int(violations or 0), int(pending or 0))
            )
    return found


def concepts(engine: Engine) -> list[Finding]:
    found = []
    concept = engine.table("concept")
    for table in CHECKED:
        for column in (c.name for c in cdm.TABLES[table] if c.name.endswith("concept_id")):
            count = _count(
                engine,
                f"SELECT count(*) FROM {engine.table(table)} f WHERE f.{column} <> 0 AND NOT "
                f"EXISTS (SELECT 1 FROM {concept} x WHERE x.concept_id = f.{column})",
            )
            found.append(Finding(CONCEPT, table, column, count))
    return found


def before_birth(engine: Engine) -> list[Finding]:
    birth = (
        "COALESCE(CAST(p.birth_datetime AS DATE), make_date(p.year_of_birth, "
        "COALESCE(p.month_of_birth, 1), COALESCE(p.day_of_birth, 1)))"
    )
    person = engine.table("person")
    return [
        Finding(
            BEFORE_BIRTH,
            table,
            column,
            _count(
                engine,
                f"SELECT count(*) FROM {engine.table(table)} f JOIN {person} p "
                f"ON p.person_id = f.person_id WHERE f.{column} < {birth}",
            ),
        )
        for table, column in FACT_DATES.items()
    ]


def after_death(engine: Engine) -> list[Finding]:
    death = engine.table("death")
    return [
        Finding(
            AFTER_DEATH,
            table,
            column,
            _count(
                engine,
                f"SELECT count(*) FROM {engine.table(table)} f JOIN {death} d "
                f"ON d.person_id = f.person_id "
                f"WHERE f.{column} > d.death_date + INTERVAL '{DEATH_GRACE_DAYS} days'",
            ),
        )
        for table, column in FACT_DATES.items()
        if table != "death"
    ]


def outside_periods(engine: Engine) -> list[Finding]:
    periods = engine.table("observation_period")
    return [
        Finding(
            OUTSIDE_PERIOD,
            table,
            column,
            _count(
                engine,
                f"SELECT count(*) FROM {engine.table(table)} f WHERE NOT EXISTS (SELECT 1 "
                f"FROM {periods} op WHERE op.person_id = f.person_id AND f.{column} "
                "BETWEEN op.observation_period_start_date AND op.observation_period_end_date)",
            ),
        )
        for table, column in FACT_DATES.items()
        if table != "death"  # a death may come after the last fact
    ]


def feed_rows(engine: Engine) -> dict[str, dict[str, int]]:
    """Rows per feed and table, for the tables of persons' facts: a row counts for each feed
    its person's events came from."""
    by_feed: dict[str, dict[str, int]] = {}
    noted = engine.keys_table(feeds.TABLE)
    tables = [t for t in CHECKED if any(c.name == "person_id" for c in cdm.TABLES[t])]
    for table in tables:
        for feed, count in engine.query(
            f"SELECT COALESCE(pf.feed, '{NO_FEED}'), count(*) FROM {engine.table(table)} f "
            f"LEFT JOIN {noted} pf ON pf.person_id = f.person_id GROUP BY 1 ORDER BY 1"
        ):
            by_feed.setdefault(str(feed), {})[table] = int(count)
    return {feed: {t: counts.get(t, 0) for t in tables} for feed, counts in by_feed.items()}


def _count(engine: Engine, sql: str) -> int:
    rows = engine.query(sql)
    return int(rows[0][0] or 0) if rows else 0
