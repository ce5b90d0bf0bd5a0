"""Fixture messages for the hl7v2 tests (synthetic patients only)."""

from __future__ import annotations


def _message(*segments: str) -> str:
    return "\r".join(segments) + "\r"


ADT_A01 = _message(
    "MSH|^~\\&|HIS|SNUH|HL7BUS|LAB|20240301083000||ADT^A01^ADT_A01|CTRL0001|P|2.5.1|||AL|NE",
    "EVN|A01|20240301083000",
    "PID|1||12345^^^SNUH^MR~900101-1234567^^^KOR^NI||HONG^GILDONG^^^^^L~홍^길동||19900101|M"
    "|||1 Main St^^Seoul^^04000^KR||^PRN^PH^^^^5551234",
    "NK1|1|KIM^YOUNGHEE|SPO",
    "PV1|1|I|W12^301^2^SNUH||||1234^LEE^DOC|||MED",
    "ZPD|1|custom^stuff|",
)

ORU_R01 = _message(
    "MSH|^~\\&|LAB|SNUH|EHR|SNUH|20240301120000||ORU^R01^ORU_R01|LAB00042|P|2.3",
    "PID|1||555^^^SNUH^MR||DOE^JANE||19700101|F",
    "OBR|1|ORD1|FIL1|CBC^Complete blood count^L|||20240301110000",
    "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL^g/dL^UCUM|12.0-16.0|N|||F",
    "OBX|2|ST|TXT^Comment^L||Fe\\S\\Hb ratio \\T\\ note\\.br\\second line||||||F",
    'OBX|3|NM|777-3^Platelets^LN||""||||||D',
    "NTE|1||free text with \\E\\ backslash and \\F\\ pipe",
)

# Custom delimiters: field '#', component '!', repetition '@', escape '$', subcomponent '%'.
CUSTOM = _message(
    "MSH#!@$%#APP#FAC#RAPP#RFAC#20240301##ADT!A08#C1#P#2.4",
    "PID#1##A1!!!AUTH@A2!!!AUTH2##SMITH!JOHN%JR##19800101",
    "OBX#1#ST#X##a$F$b$S$c$R$d$T$e$E$f",
)

# Only component and repetition separators declared.
SHORT_ENCODING = "MSH|^~|A|B|C|D|20240301||ADT^A04|S1|P|2.2\rPID|1||77||X&Y^Z\\W\r"

CORPUS = {
    "adt_a01": ADT_A01,
    "oru_r01": ORU_R01,
    "custom": CUSTOM,
    "short_encoding": SHORT_ENCODING,
}
