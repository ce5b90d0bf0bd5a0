"""Writes the small OMOP vocabulary the project ships for tests and the demo, in Athena's format.

A development tool, like tests/samplefeed.py: it wrote connectors/warehouse/vocabulary/sample/,
which `hl7bus demo` loads and the tests read; tests/test_vocabulary.py checks that it still does,
byte for byte. Nothing here was downloaded from Athena (no network is reachable from the build):

- Concept ids that public OHDSI material shows for the same code are real: the OHDSI Eunomia
  test CDM (a subset of Athena, github.com/OHDSI/Eunomia, EunomiaCdms/csv/cdm: LOINC, SNOMED,
  RxNorm, CVX, ICD10CM, Gender and Visit concepts, the domain, vocabulary and relationship
  concept ids), the Data Quality Dashboard's concept thresholds (OHDSI/DataQualityDashboard,
  OMOP_CDMv5.4_Concept_Level.csv: LOINC and unit concept names), OHDSI's KCD7 load script
  (OHDSI/Vocabulary-v5.0, KCD7/load_stage.sql: the code form E11.9, the class 'KCD7 code', the
  Korean language concept 4175771) and OMOP CDM documentation (8507/8532 gender, 9201/9202/9203
  visits).
- Every other concept gets an id from OMOP's local range (above 2,000,000,000, which OMOP leaves
  to sites for their own concepts), in blocks: 2000100xxx metadata, 2000101xxx LOINC,
  2000102xxx UCUM, 2000103xxx ICD-10 and KCD-7, 2000104xxx SNOMED, 2000105xxx drugs and
  vaccines. No such id pretends to be Athena's.
- The relationships between sample concepts ('Maps to' from ICD-10, KCD-7 and ICD-10-CM codes to
  SNOMED) are shaped like Athena's; only ICD10CM K92.2 -> SNOMED 74474003 is Athena's own (from
  Eunomia). Vocabulary versions say "hl7bus sample".

Command line: ``python tests/vocabsample.py --out connectors/warehouse/vocabulary/sample``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

START, END = "19700101", "20991231"
KOREAN = 4175771  # language concept of KCD7's Korean synonyms (OHDSI KCD7/load_stage.sql)
SAMPLE_VERSION = "hl7bus sample"


class Concept(NamedTuple):
    concept_id: int
    name: str
    domain: str
    vocabulary: str
    concept_class: str
    standard: str  # 'S' or ''
    code: str
    invalid: str = ""


def _meta(concept_id: int, name: str, vocabulary: str, concept_class: str) -> Concept:
    """A metadata concept (a vocabulary, domain, class or relationship): 'OMOP generated'."""
    return Concept(concept_id, name, "Metadata", vocabulary, concept_class, "", "OMOP generated")


# vocabulary_id -> (name, reference, vocabulary_concept_id). Ids from Eunomia's VOCABULARY.csv,
# but KCD7 (added to Athena in 2019, after Eunomia's vocabulary release): local.
VOCABULARIES: dict[str, tuple[str, str, int]] = {
    "CVX": (
        "CDC Vaccine Administered CVX (NCIRD)",
        "https://www2a.cdc.gov/vaccines/iis/iisstandards/vaccines.asp?rpt=cvx",
        581400,
    ),
    "Concept Class": ("OMOP Concept Class", "OMOP generated", 44819233),
    "Domain": ("OMOP Domain", "OMOP generated", 44819147),
    "Gender": ("OMOP Gender", "OMOP generated", 44819108),
    "ICD10": (
        "International Classification of Diseases, Tenth Revision (WHO)",
        "http://www.who.int/classifications/icd/icdonlineversions/en/",
        44819124,
    ),
    "ICD10CM": (
        "International Classification of Diseases, Tenth Revision, Clinical Modification (NCHS)",
        "http://www.cdc.gov/nchs/icd/icd10cm.htm",
        44819098,
    ),
    "KCD7": (
        "Korean Classification of Diseases, 7th Revision",
        "https://www.hira.or.kr",
        2000100001,
    ),
    "LOINC": (
        "Logical Observation Identifiers Names and Codes (Regenstrief Institute)",
        "http://loinc.org/downloads/loinc",
        44819102,
    ),
    "None": ("OMOP Standardized Vocabularies", "OMOP generated", 44819096),
    "Relationship": ("OMOP Relationship", "OMOP generated", 44819235),
    "RxNorm": (
        "RxNorm (NLM)",
        "http://www.nlm.nih.gov/research/umls/rxnorm/docs/rxnormfiles.html",
        44819104,
    ),
    "SNOMED": (
        "Systematic Nomenclature of Medicine - Clinical Terms (IHTSDO)",
        "http://www.nlm.nih.gov/research/umls/licensedcontent/umlsknowledgesources.html",
        44819097,
    ),
    "UCUM": (
        "Unified Code for Units of Measure (Regenstrief Institute)",
        "http://aurora.regenstrief.org/~ucum/ucum.html#section-Alphabetic-Index",
        44819107,
    ),
    "Visit": ("OMOP Visit", "OMOP generated", 44819119),
    "Vocabulary": ("OMOP Vocabulary", "OMOP generated", 44819232),
}

# domain_id -> (name, domain_concept_id), from Eunomia's DOMAIN.csv.
DOMAINS: dict[str, tuple[str, int]] = {
    "Condition": ("Condition", 19),
    "Drug": ("Drug", 13),
    "Gender": ("Gender", 2),
    "Measurement": ("Measurement", 21),
    "Metadata": ("Metadata", 7),
    "Observation": ("Observation", 27),
    "Unit": ("Unit", 16),
    "Visit": ("Visit", 8),
}

# concept_class_id -> concept_class_concept_id (local: not in the public material at hand).
CONCEPT_CLASSES: dict[str, int] = {
    "4-char billing code": 2000100012,
    "CVX": 2000100013,
    "Clinical Finding": 2000100014,
    "Concept Class": 2000100015,
    "Domain": 2000100016,
    "Gender": 2000100017,
    "ICD10 Hierarchy": 2000100018,
    "ICD10 code": 2000100019,
    "Ingredient": 2000100020,
    "KCD7 code": 2000100021,
    "Lab Test": 2000100022,
    "Relationship": 2000100023,
    "Undefined": 2000100024,
    "Unit": 2000100025,
    "Visit": 2000100026,
    "Vocabulary": 2000100027,
    "Clinical Observation": 2000100028,
}

# relationship_id -> (name, is_hierarchical, defines_ancestry, reverse, concept id): Eunomia's.
RELATIONSHIPS: dict[str, tuple[str, str, str, str, int]] = {
    "Is a": ("Is a", "1", "0", "Subsumes", 44818821),
    "Mapped from": ("Standard to Non-standard map (OMOP)", "0", "0", "Maps to", 44818976),
    "Maps to": ("Non-standard to Standard map (OMOP)", "0", "0", "Mapped from", 44818977),
    "Subsumes": ("Subsumes", "1", "1", "Is a", 44818723),
}


def _lab(concept_id: int, code: str, name: str) -> Concept:
    return Concept(concept_id, name, "Measurement", "LOINC", "Lab Test", "S", code)


def _unit(concept_id: int, code: str, name: str) -> Concept:
    return Concept(concept_id, name, "Unit", "UCUM", "Unit", "S", code)


# The LOINC codes of tests/samplefeed.py's panels and of the golden messages (tests/golden).
LOINC: tuple[Concept, ...] = (
    # Real ids: Eunomia (code and id), names as the Data Quality Dashboard gives them.
    _lab(3000963, "718-7", "Hemoglobin [Mass/volume] in Blood"),
    _lab(3004501, "2345-7", "Glucose [Mass/volume] in Serum or Plasma"),
    _lab(3006906, "17861-6", "Calcium [Mass/volume] in Serum or Plasma"),
    _lab(
        3006923, "1742-6",
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
    ),
    _lab(3013682, "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma"),
    _lab(
        3013721, "1920-8",
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
    ),
    _lab(3014576, "2075-0", "Chloride [Moles/volume] in Serum or Plasma"),
    _lab(3015632, "2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma"),
    _lab(3016723, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
    _lab(3019550, "2951-2", "Sodium [Moles/volume] in Serum or Plasma"),
    _lab(3020630, "2885-2", "Protein [Mass/volume] in Serum or Plasma"),
    _lab(3023103, "2823-3", "Potassium [Moles/volume] in Serum or Plasma"),
    _lab(3024128, "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma"),
    _lab(3024561, "1751-7", "Albumin [Mass/volume] in Serum or Plasma"),
    _lab(
        3035995, "6768-6",
        "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
    ),
    # Local ids.
    _lab(2000101001, "6690-2", "Leukocytes [#/volume] in Blood by Automated count"),
    _lab(2000101002, "789-8", "Erythrocytes [#/volume] in Blood by Automated count"),
    _lab(2000101003, "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count"),
    _lab(2000101004, "787-2", "MCV [Entitic volume] by Automated count"),
    _lab(2000101005, "785-6", "MCH [Entitic mass] by Automated count"),
    _lab(2000101006, "786-4", "MCHC [Mass/volume] by Automated count"),
    _lab(2000101007, "777-3", "Platelets [#/volume] in Blood by Automated count"),
    _lab(2000101008, "770-8", "Neutrophils/100 leukocytes in Blood by Automated count"),
    _lab(2000101009, "736-9", "Lymphocytes/100 leukocytes in Blood by Automated count"),
    _lab(2000101010, "1968-7", "Bilirubin.direct [Mass/volume] in Serum or Plasma"),
    _lab(2000101011, "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"),
    _lab(2000101012, "2571-8", "Triglyceride [Mass/volume] in Serum or Plasma"),
    _lab(2000101013, "2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma"),
    _lab(
        2000101014, "13457-7",
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
    ),
    _lab(2000101015, "5803-2", "pH of Urine by Test strip"),
    _lab(2000101016, "5811-5", "Specific gravity of Urine by Test strip"),
    _lab(2000101017, "5804-0", "Protein [Mass/volume] in Urine by Test strip"),
    _lab(2000101018, "5792-7", "Glucose [Mass/volume] in Urine by Test strip"),
    _lab(2000101019, "5794-3", "Hemoglobin [Presence] in Urine by Test strip"),
    _lab(2000101020, "5799-2", "Leukocyte esterase [Presence] in Urine by Test strip"),
    _lab(2000101021, "2498-4", "Iron [Mass/volume] in Serum or Plasma"),
    _lab(2000101022, "2500-7", "Iron binding capacity [Mass/volume] in Serum or Plasma"),
    _lab(2000101023, "2502-3", "Iron saturation [Mass Fraction] in Serum or Plasma"),
    _lab(2000101024, "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma"),
    _lab(2000101025, "5196-1", "Hepatitis B virus surface Ag [Presence] in Serum"),
    _lab(2000101026, "5778-6", "Color of Urine"),
    _lab(2000101027, "58410-2", "CBC panel - Blood by Automated count"),
    _lab(2000101028, "51990-0", "Basic metabolic panel - Blood"),
    _lab(2000101029, "24325-3", "Hepatic function 2000 panel - Serum or Plasma"),
    _lab(2000101030, "24331-1", "Lipid 1996 panel - Serum or Plasma"),
    _lab(2000101031, "24356-8", "Urinalysis complete panel - Urine"),
    _lab(2000101032, "50190-5", "Iron and Iron binding capacity panel - Serum or Plasma"),
    _lab(2000101033, "24323-8", "Comprehensive metabolic 2000 panel - Serum or Plasma"),
    # A LOINC code of the Observation domain: its results land in observation, not measurement.
    Concept(
        2000101034, "Tobacco smoking status", "Observation", "LOINC", "Clinical Observation",
        "S", "72166-2",
    ),
)  # fmt: skip

# The UCUM units of the sample feed and the golden messages, as streams/maps/units.csv spells
# them. Real ids: the Data Quality Dashboard (unit names), the SMC/Ajou sample measurement table.
UNITS: tuple[Concept, ...] = (
    _unit(8583, "fL", "femtoliter"),
    _unit(8645, "U/L", "unit per liter"),
    _unit(8713, "g/dL", "gram per deciliter"),
    _unit(8749, "umol/L", "micromole per liter"),
    _unit(8751, "mg/L", "milligram per liter"),
    _unit(8753, "mmol/L", "millimole per liter"),
    _unit(8840, "mg/dL", "milligram per deciliter"),
    _unit(2000102001, "%", "percent"),
    _unit(2000102002, "10*3/uL", "thousand per microliter"),
    _unit(2000102003, "10*6/uL", "million per microliter"),
    _unit(2000102004, "pg", "picogram"),
    _unit(2000102005, "ug/dL", "microgram per deciliter"),
    _unit(2000102006, "[pH]", "pH"),
    _unit(2000102007, "meq/L", "milliequivalent per liter"),
)

PNEUMONIA, GI_BLEEDING = 255848, 192671  # SNOMED, real (Eunomia)
T2DM, HEADACHE = 2000104001, 2000104002  # SNOMED, local

CONDITIONS: tuple[Concept, ...] = (
    Concept(PNEUMONIA, "Pneumonia", "Condition", "SNOMED", "Clinical Finding", "S", "233604007"),
    Concept(
        GI_BLEEDING, "Gastrointestinal hemorrhage", "Condition", "SNOMED", "Clinical Finding",
        "S", "74474003",
    ),
    Concept(
        T2DM, "Type 2 diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", "S",
        "44054006",
    ),
    Concept(HEADACHE, "Headache", "Condition", "SNOMED", "Clinical Finding", "S", "25064002"),
    # Source (non-standard) codes.
    Concept(
        35208414, "Gastrointestinal hemorrhage, unspecified", "Condition", "ICD10CM",
        "4-char billing code", "", "K92.2",
    ),
    Concept(
        2000103001, "Non-insulin-dependent diabetes mellitus", "Condition", "ICD10",
        "ICD10 Hierarchy", "", "E11",
    ),
    Concept(
        2000103002, "Non-insulin-dependent diabetes mellitus without complications",
        "Condition", "ICD10", "ICD10 code", "", "E11.9",
    ),
    Concept(
        2000103003, "Pneumonia, unspecified", "Condition", "ICD10", "ICD10 code", "", "J18.9",
    ),
    Concept(2000103004, "Headache", "Condition", "ICD10", "ICD10 code", "", "R51"),
    Concept(
        2000103005, "Type 2 diabetes mellitus without complications", "Condition", "KCD7",
        "KCD7 code", "", "E11.9",
    ),
    # A KCD7 code that maps to nothing (its source concept is found, its standard one is not).
    Concept(
        2000103006, "Novel coronavirus infection", "Observation", "KCD7", "KCD7 code", "",
        "U18.1",
    ),
)  # fmt: skip

DRUGS: tuple[Concept, ...] = (
    Concept(1713332, "Amoxicillin", "Drug", "RxNorm", "Ingredient", "S", "723"),
    Concept(1728416, "Penicillin G", "Drug", "RxNorm", "Ingredient", "S", "7980"),
    Concept(2000105001, "Penicillin", "Drug", "RxNorm", "Ingredient", "S", "70618"),
    Concept(
        40213281, "diphtheria, tetanus toxoids and acellular pertussis vaccine", "Drug", "CVX",
        "CVX", "S", "20",
    ),
    Concept(
        2000105002, "hepatitis B vaccine, pediatric or pediatric/adolescent dosage", "Drug",
        "CVX", "CVX", "S", "08",
    ),
)  # fmt: skip

PEOPLE_AND_VISITS: tuple[Concept, ...] = (
    Concept(8507, "MALE", "Gender", "Gender", "Gender", "S", "M"),
    Concept(8532, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
    Concept(9201, "Inpatient Visit", "Visit", "Visit", "Visit", "S", "IP"),
    Concept(9202, "Outpatient Visit", "Visit", "Visit", "Visit", "S", "OP"),
    Concept(9203, "Emergency Room Visit", "Visit", "Visit", "Visit", "S", "ER"),
)

# (source, target): 'Maps to' from a source code to its standard concept.
MAPS_TO: tuple[tuple[int, int], ...] = (
    (35208414, GI_BLEEDING),  # Athena's own (Eunomia)
    (2000103001, T2DM),
    (2000103002, T2DM),
    (2000103003, PNEUMONIA),
    (2000103004, HEADACHE),
    (2000103005, T2DM),
)
# A mapping withdrawn in an earlier release (invalid_reason 'D'): the lookup must not use it.
WITHDRAWN: tuple[tuple[int, int], ...] = ((2000103004, PNEUMONIA),)

SYNONYMS: tuple[tuple[int, str, int], ...] = (
    (2000103005, "합병증을 동반하지 않은 2형 당뇨병", KOREAN),
)


def clinical_concepts() -> tuple[Concept, ...]:
    return LOINC + UNITS + CONDITIONS + DRUGS + PEOPLE_AND_VISITS


def metadata_concepts() -> tuple[Concept, ...]:
    return (
        Concept(
            0, "No matching concept", "Metadata", "None", "Undefined", "", "No matching concept"
        ),
        *(_meta(i, n, "Vocabulary", "Vocabulary") for n, _, i in VOCABULARIES.values()),
        *(_meta(i, n, "Domain", "Domain") for n, i in DOMAINS.values()),
        *(_meta(i, c, "Concept Class", "Concept Class") for c, i in CONCEPT_CLASSES.items()),
        *(_meta(r[4], r[0], "Relationship", "Relationship") for r in RELATIONSHIPS.values()),
    )


def tables() -> dict[str, tuple[tuple[str, ...], Sequence[tuple[object, ...]]]]:
    """File name -> (header, rows), rows in a fixed order."""
    concepts = sorted(metadata_concepts() + clinical_concepts())
    standard = [c.concept_id for c in clinical_concepts() if c.standard == "S"]
    relationships: list[tuple[int, int, str, str, str, str]] = []
    for source, target in MAPS_TO:
        relationships += [
            (source, target, "Maps to", START, END, ""),
            (target, source, "Mapped from", START, END, ""),
        ]
    for source, target in WITHDRAWN:
        relationships += [
            (source, target, "Maps to", START, "20200101", "D"),
            (target, source, "Mapped from", START, "20200101", "D"),
        ]
    for concept_id in standard:  # Athena maps every standard concept to itself
        relationships += [
            (concept_id, concept_id, "Maps to", START, END, ""),
            (concept_id, concept_id, "Mapped from", START, END, ""),
        ]
    return {
        "CONCEPT.csv": (
            (
                "concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id",
                "standard_concept", "concept_code", "valid_start_date", "valid_end_date",
                "invalid_reason",
            ),
            [(*c[:7], START, END, c.invalid) for c in concepts],
        ),
        "VOCABULARY.csv": (
            (
                "vocabulary_id", "vocabulary_name", "vocabulary_reference", "vocabulary_version",
                "vocabulary_concept_id",
            ),
            [(v, n, r, SAMPLE_VERSION, i) for v, (n, r, i) in sorted(VOCABULARIES.items())],
        ),
        "DOMAIN.csv": (
            ("domain_id", "domain_name", "domain_concept_id"),
            [(d, n, i) for d, (n, i) in sorted(DOMAINS.items())],
        ),
        "CONCEPT_CLASS.csv": (
            ("concept_class_id", "concept_class_name", "concept_class_concept_id"),
            [(c, c, i) for c, i in sorted(CONCEPT_CLASSES.items())],
        ),
        "RELATIONSHIP.csv": (
            (
                "relationship_id", "relationship_name", "is_hierarchical", "defines_ancestry",
                "reverse_relationship_id", "relationship_concept_id",
            ),
            [(r, *rest) for r, rest in sorted(RELATIONSHIPS.items())],
        ),
        "CONCEPT_RELATIONSHIP.csv": (
            (
                "concept_id_1", "concept_id_2", "relationship_id", "valid_start_date",
                "valid_end_date", "invalid_reason",
            ),
            sorted(relationships),
        ),
        "CONCEPT_SYNONYM.csv": (
            ("concept_id", "concept_synonym_name", "language_concept_id"),
            sorted(SYNONYMS),
        ),
        "CONCEPT_ANCESTOR.csv": (
            (
                "ancestor_concept_id", "descendant_concept_id", "min_levels_of_separation",
                "max_levels_of_separation",
            ),
            [(i, i, 0, 0) for i in sorted(standard)],
        ),
    }  # fmt: skip


README = """\
# A small OMOP vocabulary, in the format of an OHDSI Athena download

Generated by tests/vocabsample.py (do not edit by hand; tests/test_vocabulary.py checks that
the generator still writes these files). `hl7bus warehouse vocab load` loads it; `hl7bus demo`
does so before it starts the sink. It holds the concepts the sample feed and the tests use.
Concept ids above 2,000,000,000 are local (OMOP's range for a site's own concepts), not
Athena's; the others are Athena's ids as public OHDSI material shows them. For real use, load a
download from https://athena.ohdsi.org instead (docs/omop-mapping.md, Vocabulary).
"""


def write_sample(folder: Path) -> list[Path]:
    """Write the sample's files into `folder` (created when missing); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(README, encoding="utf-8", newline="\n")
    written = [folder / "README.md"]
    for name, (header, rows) in tables().items():
        lines = ["\t".join(header), *("\t".join(str(v) for v in row) for row in rows)]
        path = folder / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the files into")
    args = parser.parse_args()
    for path in write_sample(args.out):
        print(path)


if __name__ == "__main__":
    main()
