"""De-identification: identified event -> research event, by an allow-list policy.

The engine is pure (no I/O); policies and keys are read once, at start. One job a file:
:mod:`.policy` (profiles and policy files, checked at load), :mod:`.keys` (the key ring,
pseudonyms, date offsets), :mod:`.engine` (applying a policy to one event),
:mod:`.generalize` (dates, ages, postal codes), :mod:`.leaks` (the leak check), :mod:`.metrics`,
:mod:`.review` (the offline review of ``hl7bus deid``), :mod:`.fields` (what the engine reads
from the schemas), :mod:`.contract` (the research contracts: the schema of each research topic,
derived from the identified schema and the policy), :mod:`.errors`, :mod:`.config` (the
``deid`` settings).

A policy (YAML, :data:`PROFILES` shipped under ``streams/policies/``, or a user file) names, per
event type and field, one action:

=====================  ======================================================================
action                 effect
=====================  ======================================================================
``keep``               the value as it is (refused for ``direct`` and ``free_text`` fields)
``drop``               absent from the research contract (the same as not naming the field)
``pseudonymize``       keyed HMAC-SHA-256 of the value (32 hex digits); the key id goes to
                       ``pseudonym_key_id``. Refused for national ids and insurance numbers
                       (removed, never hashed: PIPA guidance)
``shift_date``         moved by the patient's offset: a whole number of days in the policy's
                       ``date_shift`` range, derived from the key and the patient key, the same
                       for every event of the patient, so intervals are preserved
``truncate_date:year`` Jan 1 of the year (instants at 00:00 UTC; ISO date strings to ``YYYY``)
``truncate_date:month`` the first of the month (``YYYY-MM``)
``generalize:age90``   a birth year: ages of 90 or more at the event are aggregated into one
                       category, the birth year of a 90-year-old (HIPAA 164.514(b)(2)(i)(C))
``generalize:zip3``    a US ZIP code to its first 3 digits; the 3-digit areas of 20,000 people
                       or fewer (:data:`RESTRICTED_ZIP3`) to ``000``; anything else null
``generalize:kr_postal3``  a Korean 5-digit postal code to its first 3 digits (the si/gun/gu
                       district); anything else null
``scrub``              free text through :func:`hl7bus.streams.scrub.scrub_text` with the
                       message's own identifiers, then names found by their cues, then
                       patterns; dates in it shifted with the patient's offset, replaced or
                       kept (the policy's ``free_text_dates``)
=====================  ======================================================================

Allow-list: a field the policy does not name is absent from the research topic's contract
(Z-segment content in Generic events included); a policy that names an unknown event type,
field or action, or an action the field's type cannot take, is a :class:`PolicyError` at start.

Two fields are the engine's own, set whatever the policy says: ``pseudonym_key_id`` (the active
key id, when something was pseudonymized) and ``deid_policy`` (:attr:`Policy.digest`, a hash
of the effective policy, also sent as the ``hl7bus.policy`` header).

**Where free text gets the message's identifiers.** An identified event alone lacks most of
them (an Observation has no patient name). The parse stage computes
:func:`~hl7bus.streams.scrub.identifiers_of` once per message and carries the result in the
``message_identifiers`` field of every event on ``hl7.events`` (the restricted, identified
topic, which holds the raw message's content anyway). That field is ``direct``: a policy can
only drop it, so it never reaches a research topic, and nothing of it goes into a header, a
log or a metric. The same identifiers feed the leak check. An event without the field (written
before the field existed) can still be de-identified unless a non-empty field is to be scrubbed:
then it is refused (``no_identifiers``) and waits in the DLQ for a replay.

Fails closed: any error while applying the policy, or a source identifier found in the output
(the leak check), raises :class:`DeidError`; the caller sends nothing to a research topic.
"""

from hl7bus.streams.deid.config import DeidConfig
from hl7bus.streams.deid.engine import Step, deidentify
from hl7bus.streams.deid.errors import DeidError, KeyConfigError, NoKeyError, PolicyError
from hl7bus.streams.deid.fields import CARRIER, ENGINE_FIELDS
from hl7bus.streams.deid.generalize import RESTRICTED_ZIP3, kr_postal3, zip3
from hl7bus.streams.deid.keys import MIN_KEY_BYTES, Pseudonymizer, load_key
from hl7bus.streams.deid.leaks import check_leaks
from hl7bus.streams.deid.policy import (
    ACTIONS,
    DEFAULT_PROFILE,
    PROFILES,
    Policy,
    profile_text,
)

__all__ = [
    "ACTIONS",
    "CARRIER",
    "DEFAULT_PROFILE",
    "ENGINE_FIELDS",
    "MIN_KEY_BYTES",
    "PROFILES",
    "RESTRICTED_ZIP3",
    "DeidConfig",
    "DeidError",
    "KeyConfigError",
    "NoKeyError",
    "Policy",
    "PolicyError",
    "Pseudonymizer",
    "Step",
    "check_leaks",
    "deidentify",
    "kr_postal3",
    "load_key",
    "profile_text",
    "zip3",
]
