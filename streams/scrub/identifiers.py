"""What a message tells about its people: its own names and identifiers, as needles.

Fields read by :func:`identifiers_of` (every repetition; in every occurrence of the segment):

========  ==================================================================================
segment   fields (HL7 data type)
========  ==================================================================================
PID       2, 3, 4 patient ids (CX.1); 5 name, 6 mother's maiden name, 9 alias (XPN);
          11 address (XAD); 13 home, 14 business, 40 telecom (XTN); 18 account number (CX.1);
          19 SSN / Korean RRN; 20 driver's licence (DLN.1); 21 mother's identifier (CX.1)
PD1       4 primary care provider (XCN)
MRG       1-6 prior identifiers and account/visit numbers (CX.1); 7 prior name (XPN)
NK1       2 name, 30 contact person (XPN); 4, 32 addresses (XAD); 5, 6, 31, 40, 41 phones
          (XTN); 13 organization name (XON.1, XON.10); 33 identifiers (CX.1); 37 SSN
PV1       7 attending, 8 referring, 9 consulting, 17 admitting, 52 other provider (XCN: id and
          name); 19 visit number, 50 alternate visit id (CX.1)
GT1       2 guarantor number, 19 employee id (CX.1); 3 name, 4 spouse, 16 employer name (XPN);
          5, 17 addresses (XAD); 6, 7, 18 phones (XTN); 12 SSN
IN1       16 name of insured (XPN); 19 insured's address (XAD); 36 policy number;
          49 insured's id (CX.1)
IN2       1 employee id, 61 member number (CX.1); 2 SSN; 6 Medicare, 8 Medicaid number
ORC       2, 3, 4 placer/filler/group order numbers (EI.1); 10 entered by, 11 verified by,
          12 ordering provider, 19 action by (XCN); 14 call-back phone (XTN)
OBR       2, 3 order numbers (EI.1); 10 collector, 16 ordering provider, 28 copies to (XCN);
          17 call-back phone (XTN); 32-35 interpreters and technicians (NDL: CNN id and name)
EVN       5 operator (XCN)
PV2       13 referral source (XCN)
OBX       16 responsible observer, 25 performing organization medical director (XCN)
NTE       5 entered by (XCN)
TXA       5 primary activity provider, 9 originator, 10 assigned document authenticator,
          11 transcriptionist, 22 authentication person, 23 distributed copies (XCN)
DG1, PR1  DG1-16 diagnosing clinician; PR1-11 surgeon, 12 procedure practitioner (XCN)
RXO, RXE  RXO-14 ordering provider's DEA, RXE-13 (XCN); RXD-10, RXA-10 dispensing and
RXD, RXA  administering provider (XCN)
FT1       20 performed by, 21 ordered by (XCN)
PRD       2 provider name (XPN), 3 address (XAD), 5 communication (XTN), 7 identifiers (CX.1)
PRT, ROL  PRT-5 participation person, ROL-4 role person (XCN); AIP-3 personnel resource (XCN)
AIP
CTD       2 contact name (XPN), 4 address (XAD), 5 phone (XTN)
STF       3 staff name (XPN), 10 phone (XTN), 11 office address (XAD)
========  ==================================================================================

From each data type: XPN family (FN.1), given, further given names; XCN/CNN id, family, given,
further given names (an XCN-1 written in Hangul is taken as a name); CX/EI id; XTN-1 formatted
number, XTN-4 e-mail, XTN-6 + XTN-7 area code and local number, XTN-12 unformatted number;
XAD-1 street (SAD.1, and SAD.2 + SAD.3), XAD-2 other designation (apartment and unit),
XAD-3 city or district, XAD-5 postal code. Not read: XAD-4 (state/province level, which Safe
Harbor allows), dates (the date patterns handle them), codes and assigning authorities.

How a value becomes needles (name orders, phone forms) is :mod:`.collector`; which needles are
kept, :mod:`.needles`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from hl7bus.hl7v2 import HL7_NULL, Encoding, Message, split_field

from .collector import Collector
from .kinds import Kind
from .words import SYLLABLE

__all__ = ["Identifiers", "field_needles", "identifiers_of"]


@dataclass(frozen=True, repr=False)
class Identifiers:
    """One message's own names and identifiers, as needles ``(kind, literal)``.

    Hashable and immutable; the search tables are built once per distinct set (cached). The
    repr shows counts only: values are PHI and must not reach logs.
    """

    needles: frozenset[tuple[Kind, str]] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        names: Iterable[str | tuple[str, ...]] = (),
        ids: Iterable[str] = (),
        national_ids: Iterable[str] = (),
        phones: Iterable[str] = (),
        emails: Iterable[str] = (),
        addresses: Iterable[str] = (),
    ) -> Identifiers:
        """Build a set from plain values, with the same expansions as :func:`identifiers_of`.

        ``names``: a full name as written (``"김민준"``, ``"KIM MINJUN"``, ``"Kim, Minjun"``) or a
        tuple ``(family, given[, further given])``. ``national_ids``: SSNs or Korean RRNs
        (``[RRN]`` when shaped like one, else ``[ID]``). ``addresses``: street lines, districts,
        postal codes.
        """
        c = Collector()
        for n in names:
            if isinstance(n, tuple):
                c.person(*[*n, "", ""][:3])
            else:
                c.person(n, "", "")
        for v in ids:
            c.ident(v)
        for v in national_ids:
            c.national(v)
        for v in phones:
            c.phone(v)
        for v in emails:
            c.email(v)
        for v in addresses:
            c.place(v)
        return cls(frozenset(c.needles))

    def __or__(self, other: Identifiers) -> Identifiers:
        return Identifiers(self.needles | other.needles)

    def __len__(self) -> int:
        return len(self.needles)

    def __bool__(self) -> bool:
        return bool(self.needles)

    def counts(self) -> dict[Kind, int]:
        """Needles per kind (safe to log)."""
        out: dict[Kind, int] = {}
        for kind, _ in self.needles:
            out[kind] = out.get(kind, 0) + 1
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k.value}={n}" for k, n in sorted(self.counts().items()))
        return f"Identifiers({inner})"


# segment -> ((field, type), ...); see the module docstring.
_FIELDS: dict[str, tuple[tuple[int, str], ...]] = {
    "PID": (
        (2, "CX"), (3, "CX"), (4, "CX"), (5, "XPN"), (6, "XPN"), (9, "XPN"), (11, "XAD"),
        (13, "XTN"), (14, "XTN"), (18, "CX"), (19, "NID"), (20, "CX"), (21, "CX"), (40, "XTN"),
    ),
    "PD1": ((4, "XCN"),),
    "MRG": ((1, "CX"), (2, "CX"), (3, "CX"), (4, "CX"), (5, "CX"), (6, "CX"), (7, "XPN")),
    "NK1": (
        (2, "XPN"), (4, "XAD"), (5, "XTN"), (6, "XTN"), (13, "XON"), (30, "XPN"), (31, "XTN"),
        (32, "XAD"), (33, "CX"), (37, "NID"), (40, "XTN"), (41, "XTN"),
    ),
    "PV1": (
        (7, "XCN"), (8, "XCN"), (9, "XCN"), (17, "XCN"), (19, "CX"), (50, "CX"), (52, "XCN"),
    ),
    "GT1": (
        (2, "CX"), (3, "XPN"), (4, "XPN"), (5, "XAD"), (6, "XTN"), (7, "XTN"), (12, "NID"),
        (16, "XPN"), (17, "XAD"), (18, "XTN"), (19, "CX"),
    ),
    "IN1": ((16, "XPN"), (19, "XAD"), (36, "CX"), (49, "CX")),
    "IN2": ((1, "CX"), (2, "NID"), (6, "CX"), (8, "CX"), (61, "CX")),
    "ORC": (
        (2, "CX"), (3, "CX"), (4, "CX"), (10, "XCN"), (11, "XCN"), (12, "XCN"), (14, "XTN"),
        (19, "XCN"),
    ),
    "OBR": (
        (2, "CX"), (3, "CX"), (10, "XCN"), (16, "XCN"), (17, "XTN"), (28, "XCN"), (32, "NDL"),
        (33, "NDL"), (34, "NDL"), (35, "NDL"),
    ),
    # Person fields of the other segments (issue 16): every XCN/XPN a message may carry.
    "EVN": ((5, "XCN"),),
    "PV2": ((13, "XCN"),),
    "OBX": ((16, "XCN"), (25, "XCN")),
    "NTE": ((5, "XCN"),),
    "TXA": ((5, "XCN"), (9, "XCN"), (10, "XCN"), (11, "XCN"), (22, "XCN"), (23, "XCN")),
    "DG1": ((16, "XCN"),),
    "PR1": ((11, "XCN"), (12, "XCN")),
    "RXO": ((14, "XCN"),),
    "RXE": ((13, "XCN"),),
    "RXD": ((10, "XCN"),),
    "RXA": ((10, "XCN"),),
    "FT1": ((20, "XCN"), (21, "XCN")),
    "PRD": ((2, "XPN"), (3, "XAD"), (5, "XTN"), (7, "CX")),
    "PRT": ((5, "XCN"),),
    "ROL": ((4, "XCN"),),
    "AIP": ((3, "XCN"),),
    "CTD": ((2, "XPN"), (4, "XAD"), (5, "XTN")),
    "STF": ((3, "XPN"), (10, "XTN"), (11, "XAD")),
}  # fmt: skip

Components = list[list[str]]  # one repetition of a field: components -> subcomponents, decoded


def _at(comps: Components, n: int, sub: int = 0) -> str:
    """Component n (0-based), subcomponent ``sub``; "" when absent."""
    if n < len(comps) and sub < len(comps[n]):
        return comps[n][sub]
    return ""


def _comp(comps: Components, n: int) -> str:
    """Component n with its subcomponents joined by spaces."""
    return " ".join(s for s in comps[n] if s) if n < len(comps) else ""


def _collect(c: Collector, dtype: str, comps: Components) -> None:
    if dtype == "CX":
        c.ident(_at(comps, 0))
    elif dtype == "NID":
        c.national(_comp(comps, 0))
    elif dtype == "XPN":
        c.person(_at(comps, 0), _comp(comps, 1), _comp(comps, 2))
    elif dtype == "XCN":
        ident = _at(comps, 0)
        if SYLLABLE.search(ident):
            c.person(ident, "", "")
        else:
            c.ident(ident)
        c.person(_at(comps, 1), _comp(comps, 2), _comp(comps, 3))
    elif dtype == "NDL":
        cnn = comps[0] if comps else []
        c.ident(cnn[0] if cnn else "")
        c.person(*[*cnn[1:4], "", "", ""][:3])
    elif dtype == "XTN":
        c.phone(_at(comps, 0))
        c.email(_at(comps, 3))
        area, local = _at(comps, 5), _at(comps, 6)
        if local:
            c.phone(area + local)
            c.phone(local)
        c.phone(_at(comps, 11))
    elif dtype == "XAD":
        c.place(_at(comps, 0))
        c.place(" ".join(s for s in (_at(comps, 0, 1), _at(comps, 0, 2)) if s))
        c.place(_comp(comps, 1))
        c.place(_comp(comps, 2))
        c.place(_comp(comps, 4))
    elif dtype == "XON":
        c.organization(_at(comps, 0))
        c.ident(_at(comps, 9))


@lru_cache(maxsize=8192)
def field_needles(dtype: str, raw: str, enc: Encoding, codec: str) -> frozenset[tuple[Kind, str]]:
    """Needles of one raw field (all repetitions). Cached: the same doctor, patient or address
    recurs across messages, so most fields of a message cost one dictionary lookup."""
    c = Collector()
    for comps in split_field(raw, enc, codec):
        _collect(c, dtype, comps)
    return frozenset(c.needles)


def identifiers_of(message: Message) -> Identifiers:
    """The message's own names and identifiers (fields in the module docstring)."""
    enc = message.encoding
    codec = message.charset
    needles: set[tuple[Kind, str]] = set()
    # One pass over the message's segments (a message has ~10; _FIELDS names ~30 segments).
    for seg in message.segments():
        fields = _FIELDS.get(seg.name)
        if fields is None:
            continue
        raw = seg.fields
        size = len(raw)
        for n, dtype in fields:
            if n < size:
                value = raw[n]
                if value and value != HL7_NULL:
                    needles |= field_needles(dtype, value, enc, codec)
    return Identifiers(frozenset(needles))
