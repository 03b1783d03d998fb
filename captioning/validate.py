"""Is a model's answer a usable event caption? A verdict with a reason a summary can count by, and the cleaned text.

The backend retries an answer that fails (a bounded number of times) and then marks the row failed with the last
verdict's reason; this module only judges. Checks, in the order the first failing one names the reason:

- `empty`: nothing left after cleaning.
- `refusal`: the model declines or says it cannot see the images ("I'm sorry", "as an AI", "unable to view the
  video"...). First-person phrases only: a caption never speaks as "I".
- `wrong_language`: mostly non-ASCII letters (a Qwen-based model drifting into Chinese), or Latin-script text with
  fewer English function words than French/German/Spanish/Italian/Portuguese/Dutch ones, or almost none at all.
  A sign's text quoted in a foreign script does not trip it.
- `repetitive`: a decoding loop: one n-gram (2 to 8 words) occurring 3+ times and covering more than
  `max_repeat_ratio` of the words, or the same sentence twice. Checked before `truncated` because a loop usually
  also runs into the token limit, and the loop is what to look at.
- `truncated`: `finish_reason == "length"` (the server cut it), or, whatever the finish reason, the text ends on a
  comma, colon, dash or on a word no English sentence ends with ("the", "and", "of"...). A missing final period
  alone is *not* truncation: models often drop it on a complete sentence, and a cut mid-word cannot be told from
  a short word without a dictionary, while a cut at a random point lands after a function word about half the time
  and the server reports the usual cause (the token limit) anyway.
- `camera_motion`: the caption narrates camera or viewer motion ("the camera pans left", "zooms in on",
  "camera movement", "we walk forward", "the viewer turns right", "POV moves forward"). The action text comes
  from the trajectory; a caption that also describes it would contradict or duplicate it. The patterns need a
  camera- or viewer-like subject, or a camera-only verb with a direction, so "a man holding a camera walks by",
  "cameras flash", "cars zoom past" and "pots and pans" pass. See `CAMERA_MOTION_PATTERNS`.
- `too_short` / `too_long`: fewer than `min_words` or more than `max_words` words. The prompt asks for 15-80; the
  defaults (8-120) only reject answers clearly outside that, since a retry costs a full request.

Cleaning (applied before the checks, returned as `cleaned`): whitespace collapsed; markdown bold/italics
(`**...**`, `__...__`, `*...*`) unwrapped; a leading label ("Caption:", "Here is the caption:") removed; quotes around
the whole text removed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

__all__ = [
    "CAMERA_MOTION_PATTERNS",
    "REASONS",
    "ValidationConfig",
    "Verdict",
    "check_caption",
    "clean_caption",
    "find_camera_motion",
]

REASONS = (
    "empty",
    "refusal",
    "wrong_language",
    "repetitive",
    "truncated",
    "camera_motion",
    "too_short",
    "too_long",
)


@dataclass(frozen=True)
class ValidationConfig:
    min_words: int = 8
    max_words: int = 120
    language: str | None = "en"  # None switches the language check off; only English word lists are bundled
    max_repeat_ratio: float = 0.3  # share of words one repeated n-gram may cover

    def __post_init__(self):
        if not 0 < self.min_words <= self.max_words:
            raise ValueError(f"need 0 < min_words <= max_words, got {self.min_words} and {self.max_words}")
        if self.language not in ("en", None):
            raise ValueError(f"language must be 'en' or None (no check), got {self.language!r}")
        if not 0 < self.max_repeat_ratio <= 1:
            raise ValueError(f"max_repeat_ratio must be in (0, 1], got {self.max_repeat_ratio}")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None  # one of REASONS, None when ok
    message: str  # a sentence for people
    cleaned: str


# ----------------------------------------------------------------------------------------------------------------
# cleaning

_LABEL = re.compile(
    r"^(?:here(?:'s|’s| is)\s+(?:the|a|my)\s+(?:\w+\s+)?(?:caption|description)\s*:"
    r"|(?:(?:event|final|scene|video|clip)\s+)?(?:caption|description|answer|summary)\s*[:\-–])\s*",
    re.IGNORECASE,
)
_BOLD = re.compile(r"(\*\*|__)(.+?)\1")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])")
_QUOTE_PAIRS = {'"': '"', "“": "”", "«": "»", "'": "'", "‘": "’", "`": "`"}
_INNER_QUOTE = {"'": re.compile(r"(?<![A-Za-z])'|'(?![A-Za-z])")}  # an apostrophe in "man's" is not a quote


def clean_caption(text: str | None) -> str:
    """Collapse whitespace, remove markdown bold/italics, a leading label ("Caption:", "Here is the caption:") and
    quotes around the whole text (repeatedly, so `**Caption:** "A man..."` comes out as `A man...`). Quotes are
    removed only when the text holds no other quote of that kind, so `"Open" signs glow over the "Cafe"` stays."""
    s = " ".join((text or "").split())
    s = _ITALIC.sub(r"\1", _BOLD.sub(r"\2", s))
    while True:
        before = s
        s = _LABEL.sub("", s, count=1).strip()
        close = _QUOTE_PAIRS.get(s[:1])
        if close and len(s) >= 2 and s.endswith(close):
            inner = s[1:-1]
            inner_quote = _INNER_QUOTE.get(s[0], re.compile(re.escape(s[0]) + "|" + re.escape(close)))
            if not inner_quote.search(inner):
                s = inner.strip()
        if s == before:
            return s


# ----------------------------------------------------------------------------------------------------------------
# refusals

_REFUSAL = re.compile(
    r"\bI(?:'m|’m| am)\s+(?:sorry|unable|not able)\b"
    r"|\bI\s+(?:cannot|can't|can’t|can not|won't|will not|do not|don't|don’t)\s+"
    r"(?:help|assist|provide|describe|see|view|watch|access|process|open|analy[sz]e|determine|comply|caption)\b"
    r"|^\s*(?:sorry|apologies|unfortunately)\b"
    r"|\bas an? (?:AI|artificial intelligence|language model|large language model)\b"
    r"|\b(?:(?:unable|not able)\s+to|cannot|can't|can’t|can not)\s+"
    r"(?:view|see|watch|access|process|open|analy[sz]e|display)\s+(?:the\s+|these\s+|this\s+|any\s+)?(?:video|image|frame|clip|content|attachment)s?\b"
    r"|\bno (?:images?|frames?|video) (?:were|was|is|are|has been|have been) (?:provided|attached|included|shared)\b",
    re.IGNORECASE,
)

# ----------------------------------------------------------------------------------------------------------------
# language

_EN_WORDS = frozenset(
    "the a an and of in on with to is are was were as at by while their his her its from into through past near "
    "along under over for who which that this these those some several two three many people man woman men women "
    "street there it they he she".split()
)
# common function words of other Latin-script languages that are not English words (so "a", "on", "die" are out)
_FOREIGN_WORDS = frozenset(
    "le la les des une est et dans sur avec du au aux ce qui sont "  # French
    "der das und ist ein eine mit auf den dem des im zu von sich nicht "  # German
    "el los las una y con del que por para es en al lo "  # Spanish (en also French, Dutch)
    "il gli della che sono nel uno degli alla "  # Italian
    "os uma não em da do dos das ao "  # Portuguese
    "het een van zijn op niet ook "  # Dutch
    .split()
)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)


def _language_problem(text: str) -> str | None:
    letters = [c for c in text if c.isalpha()]
    if letters:
        foreign_script = sum(not c.isascii() for c in letters) / len(letters)
        if foreign_script > 0.2:
            return f"{foreign_script:.0%} of its letters are not Latin/English"
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < 6:
        return None  # too little to judge; too_short decides
    en = sum(w in _EN_WORDS for w in words)
    foreign = sum(w in _FOREIGN_WORDS for w in words)
    if foreign > en:
        return f"it has more non-English function words ({foreign}) than English ones ({en})"
    if en / len(words) < 0.1:
        return f"only {en} of its {len(words)} words are common English words"
    return None


# ----------------------------------------------------------------------------------------------------------------
# loops

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _repetition_problem(words: list[str], sentences: list[str], max_ratio: float) -> str | None:
    seen = set()
    for s in sentences:
        key = " ".join(re.findall(r"\w+", s.lower()))
        if len(key.split()) >= 3 and key in seen:
            return f"the sentence {s!r} appears twice"
        seen.add(key)
    tokens = [re.sub(r"\W+", "", w.lower()) for w in words]
    tokens = [t for t in tokens if t]
    for n in range(2, 9):
        if len(tokens) < 3 * n:
            break
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        gram, count = grams.most_common(1)[0]
        cover = min(count * n, len(tokens)) / len(tokens)
        if count >= 3 and cover > max_ratio:
            return f"{' '.join(gram)!r} repeats {count} times ({cover:.0%} of the words)"
    return None


# ----------------------------------------------------------------------------------------------------------------
# truncation

# words an English sentence does not end on (articles, conjunctions, possessives, auxiliaries, some prepositions)
_DANGLING = frozenset(
    "a an the and or but nor of with to from for into onto while as than that which whose who their his her its "
    "our your my this these those is are was were be been being has have had very such whether because although "
    "if at".split()
)


def _truncation_problem(text: str, finish_reason: str | None) -> str | None:
    if finish_reason == "length":
        return "it was cut off by the token limit (finish_reason=length); raise max_tokens or ask for less"
    if text.endswith(("...", "…")):
        return "it trails off with an ellipsis"
    if text[-1] in ",;:-–—(/&":
        return f"it ends on {text[-1]!r}, mid-sentence"
    last = re.findall(r"[A-Za-z']+", text[-30:])
    if text[-1].isalnum() and last and last[-1].lower() in _DANGLING:
        return f"it ends on {last[-1]!r}, mid-sentence"
    return None


# ----------------------------------------------------------------------------------------------------------------
# camera motion


def _forms(*stems: str) -> str:
    return "(?:" + "|".join(stems) + ")"


# verbs of camera work: camera motion with a camera-, view-, viewer- or video-like subject
_CAMERA_VERBS = _forms(
    r"pan(?:s|ned|ning)?", r"tilt(?:s|ed|ing)?", r"zoom(?:s|ed|ing)?", r"doll(?:y|ies|ied|ying)",
    r"track(?:s|ed|ing)?", r"truck(?:s|ed|ing)", r"crane(?:s|d)?", r"craning", r"orbit(?:s|ed|ing)?",
    r"rotat(?:e|es|ed|ing)", r"swivel(?:s|l?ed|l?ing)?",
)
# movement verbs: camera motion when the subject is the camera, the view or the viewer
_MOVE_VERBS = _forms(
    r"mov(?:e|es|ed|ing)", r"turn(?:s|ed|ing)?", r"push(?:es|ed|ing)?", r"pull(?:s|ed|ing)?", r"follow(?:s|ed|ing)?",
    r"glid(?:e|es|ed|ing)", r"sweep(?:s|ing)?", r"swept", r"swing(?:s|ing)?", r"swung", r"shift(?:s|ed|ing)?",
    r"advanc(?:e|es|ed|ing)", r"travel(?:s|l?ed|l?ing)?", r"walk(?:s|ed|ing)?", r"head(?:s|ed|ing)?",
    r"proceed(?:s|ed|ing)?", r"continu(?:e|es|ed|ing)", r"approach(?:es|ed|ing)?",
    r"stop(?:s|ped|ping)?", r"paus(?:e|es|ed|ing)", r"veer(?:s|ed|ing)?",
    r"drift(?:s|ed|ing)?", r"look(?:s|ed|ing)?", r"glanc(?:e|es|ed|ing)", r"step(?:s|ped|ping)?",
    r"go(?:es|ing)?", r"went", r"pass(?:es|ed|ing)?", r"circl(?:e|es|ed|ing)", r"descend(?:s|ed|ing)?",
    r"ascend(?:s|ed|ing)?", r"ris(?:e|es|ing)", r"rose", r"lower(?:s|ed|ing)?", r"rais(?:e|es|ed|ing)",
    r"shak(?:e|es|ing)", r"shook", r"sway(?:s|ed|ing)?", r"stroll(?:s|ed|ing)?", r"wander(?:s|ed|ing)?",
    r"enter(?:s|ed|ing)?", r"exit(?:s|ed|ing)?", r"cross(?:es|ed|ing)?",
)
_ADVERBS = (  # up to three adverbs or auxiliaries between subject and verb: "the camera then slowly begins to pan"
    r"(?:(?:\w+ly|is|are|was|keeps|kept|continues|continued|begins|began|starts|started|then|to|also|now|still)\s+)"
    r"{0,3}"
)
# a camera as grammatical subject: "the camera", "our camera", a sentence starting "Camera"
_CAMERA_SUBJECT = (
    r"(?:\b(?:the|our|my|this|its)\s+(?:handheld\s+)?camera(?:'s|’s)?"
    r"(?:\s+(?:view|viewpoint|perspective|angle|operator|lens))?"
    r"|(?:^|(?<=[.!?]\s))camera)"
)
_VIEW_SUBJECT = (
    r"\bthe\s+(?:view|viewpoint|perspective|point\s+of\s+view|pov|shot|framing|frame|angle|vantage\s+point"
    r"|first[-\s]person\s+(?:view|perspective|viewer))"
    r"|\bpov\b"
)
_VIEWER_SUBJECT = (
    r"\b(?:we|i|the\s+(?:viewer|walker|cameraman|camerawoman|camera\s+operator|videographer|filmer|observer"
    r"|person\s+(?:filming|recording|holding\s+the\s+camera)))"
)
_MEDIA_SUBJECT = r"\bthe\s+(?:video|footage|clip|scene|shot)"

# (rule name, pattern): each match is camera-motion narration, unless a `_PRE_EXCLUDED` word stands right before it.
# The rule's name goes into the verdict's message, so a reviewer sees which one fired.
CAMERA_MOTION_PATTERNS: tuple[tuple[str, str], ...] = (
    ("camera as subject", _CAMERA_SUBJECT + r"\s+" + _ADVERBS + _forms(_CAMERA_VERBS, _MOVE_VERBS) + r"\b"),
    ("view as subject", r"(?:" + _VIEW_SUBJECT + r")\s+" + _ADVERBS + _forms(_CAMERA_VERBS, _MOVE_VERBS) + r"\b"),
    ("viewer as subject", _VIEWER_SUBJECT + r"\s+" + _ADVERBS + _forms(_CAMERA_VERBS, _MOVE_VERBS) + r"\b"),
    ("video pans/zooms", _MEDIA_SUBJECT + r"\s+" + _ADVERBS + _forms(_CAMERA_VERBS, r"follow(?:s|ed|ing)?") + r"\b"),
    ("camera holds still",
     r"(?:" + _CAMERA_SUBJECT + "|" + _VIEW_SUBJECT + r")\s+(?:remains|stays|holds|keeps|is)\s+(?:\w+ly\s+)?"
     r"(?:still|stationary|static|steady|fixed|motionless)\b"),
    # camera verbs with a direction only a camera takes ("cars zoom past" and "tilts her head" do not match)
    ("pan with a direction",
     r"\bpan(?:s|ned|ning)?\s+(?:\w+ly\s+)?"
     r"(?:left|right|across|around|over|up|down|to\s+(?:the\s+)?(?:left|right|side))\b"),
    ("tilt with a direction",
     r"\btilt(?:s|ed|ing)?\s+(?:\w+ly\s+)?(?:up|down|upwards?|downwards?|to\s+(?:the\s+)?(?:sky|ground))\b"),
    ("zoom in/out", r"\bzoom(?:s|ed|ing)?\s+(?:\w+ly\s+)?(?:in|out|closer)\b"),
    ("dolly with a direction", r"\bdoll(?:y|ies|ied|ying)\s+(?:in|out|forward|back|left|right)\b"),
    ("camera-work nouns",
     r"\b(?:camera\s+(?:movement|motion|moves|work|pan|tilt|shake|rotation|angle\s+(?:changes|shifts))"
     r"|panning|tracking\s+shot|dolly\s+(?:shot|zoom)|pan\s+shot|whip\s+pan|zoom[-\s](?:in|out))\b"),
)
_CAMERA_MOTION = [
    (name, re.compile(r"(?:\b(?P<pre>\w+)\s+)?" + pattern, re.IGNORECASE)) for name, pattern in CAMERA_MOTION_PATTERNS
]
# "a man holding the camera turns", "smiles at the camera, walks": the camera is an object there
_PRE_EXCLUDED = frozenset(
    "holding holds held carrying carries carried with at into toward towards to from behind on of past "
    "beside near by for".split()
)


def find_camera_motion(text: str) -> tuple[str, str] | None:
    """(rule name, phrase) for the first phrase of `text` that narrates camera or viewer motion, or None."""
    for name, pattern in _CAMERA_MOTION:
        for m in pattern.finditer(text):
            pre = m.group("pre")
            if pre is not None and pre.lower() in _PRE_EXCLUDED:
                continue
            return name, text[m.end("pre") if pre is not None else m.start() : m.end()].strip()
    return None


# ----------------------------------------------------------------------------------------------------------------
# the verdict


def check_caption(
    text: str | None, finish_reason: str | None = None, config: ValidationConfig = ValidationConfig()
) -> Verdict:
    """Judge one answer. `finish_reason` is the server's ("stop", "length", ...), None if unknown."""
    cleaned = clean_caption(text)

    def fail(reason: str, message: str) -> Verdict:
        return Verdict(False, reason, message, cleaned)

    if not cleaned:
        return fail("empty", "The answer is empty.")
    m = _REFUSAL.search(cleaned)
    if m:
        return fail("refusal", f"The model refused or could not see the frames ({m.group(0).strip()!r}).")
    if config.language == "en":
        problem = _language_problem(cleaned)
        if problem:
            return fail("wrong_language", f"The answer is not in English: {problem}.")
    words = cleaned.split()
    problem = _repetition_problem(words, _SENTENCE_END.split(cleaned), config.max_repeat_ratio)
    if problem:
        return fail("repetitive", f"The answer loops: {problem}.")
    problem = _truncation_problem(cleaned, finish_reason)
    if problem:
        return fail("truncated", f"The answer is incomplete: {problem}.")
    camera = find_camera_motion(cleaned)
    if camera:
        rule, phrase = camera
        return fail(
            "camera_motion",
            f"The answer describes camera motion ({rule}: {phrase!r}); actions come from the trajectory, captions "
            "must not.",
        )
    if len(words) < config.min_words:
        return fail("too_short", f"The answer has {len(words)} words, fewer than {config.min_words}.")
    if len(words) > config.max_words:
        return fail("too_long", f"The answer has {len(words)} words, more than {config.max_words}.")
    return Verdict(True, None, "ok", cleaned)
