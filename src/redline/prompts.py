"""Every template redline puts in front of a model, in one place.

Each section belongs to one method; its parser (where the model's output must be read back)
lives beside its template, so a change to one is seen with the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redline.records import Prompt, prompt_text

# ============================================================================ critic (Jin et al. 2023)
# One model reads a request and a response, writes a critique (strengths and weaknesses), then a
# revision. Critique-only records (Shepherd, UltraFeedback) are asked for the critique alone, so
# they teach the critique without teaching the model to stop before a revision.

CRITIC_TEMPLATE = """Below is a request and a response to it. First write a critique of the response that names what it does well and what it gets wrong. Then write a revision of the response that fixes every problem the critique names and keeps everything else.

### Request
{prompt}

### Response
{response}"""

CRITIQUE_ONLY_TEMPLATE = """Below is a request and a response to it. Write a critique of the response that names what it does well and what it gets wrong.

### Request
{prompt}

### Response
{response}"""

CRITIQUE_MARK = "Critique:"
REVISION_MARK = "Revision:"
# What a critique that finds nothing to fix ends with in the critic's training targets, where the
# annotator's critique does not say so in words of its own (train/critic.py).
NOTHING_TO_FIX = "Nothing needs to change."


def critic_messages(prompt: Prompt, response: str, critique_only: bool = False) -> list[dict[str, str]]:
    """The chat prompt the critic sees. A chat prompt is shown by its last user message."""
    template = CRITIQUE_ONLY_TEMPLATE if critique_only else CRITIC_TEMPLATE
    return [{"role": "user", "content": template.format(prompt=prompt_text(prompt), response=response)}]


def critic_target(critique: str, revision: str | None) -> str:
    """What the critic learns to write: the critique, then (unless critique-only) the revision."""
    text = f"{CRITIQUE_MARK} {critique.strip()}"
    return text if revision is None else f"{text}\n\n{REVISION_MARK}\n{revision}"


@dataclass
class CriticOutput:
    critique: str
    revision: str | None  # None: the output did not parse (no revision part, or an empty one)

    @property
    def parsed(self) -> bool:
        return self.revision is not None


_REVISION_SPLIT = re.compile(rf"^\s*{re.escape(REVISION_MARK)}[ \t]*\r?\n?", re.MULTILINE)


def parse_critic_output(text: str) -> CriticOutput:
    """Split a critic's generation into critique and revision.

    The revision starts after the first line that begins with "Revision:", less the line breaks around it (LF,
    or CRLF from a critic trained on such text); a missing marker or an empty revision is a parse failure
    (``revision`` None), which callers count and never apply.
    """
    parts = _REVISION_SPLIT.split(text, maxsplit=1)
    critique = parts[0].strip()
    if critique.startswith(CRITIQUE_MARK):
        critique = critique[len(CRITIQUE_MARK):].strip()
    if len(parts) < 2:
        return CriticOutput(critique=critique, revision=None)
    revision = parts[1].strip("\r\n")  # not strip(): a revision may open with an indented line
    return CriticOutput(critique=critique, revision=revision if revision.strip() else None)


# The ways a critique says there is nothing to fix: the simulated annotators' own words ("does
# everything the prompt asked", "I would not change anything.", "It needs no revision."), the
# target's NOTHING_TO_FIX and the plain forms. Checked on the shipped feedback set (world v2, 3981
# records): 397 of its 599 critiques of answers that meet every instruction say so, and none of the
# 3382 others does. A negated form ("does not follow every instruction") is no match, nor is one with an
# exception ("follows every instruction except the word limit").
_NOTHING_TO_FIX = re.compile(
    r"(?<!not )(?<!n't )\b(?:"
    r"nothing (?:needs to|to) (?:change|fix|be (?:fixed|changed))|nothing needs (?:fixing|changing)"
    r"|(?:would|need|should) not change anything|needs? no (?:revision|changes?|fix(?:es|ing)?)"
    r"|no (?:changes?|revision|fix(?:es)?) (?:is |are )?needed"
    r"|does everything the prompt asked|follows every instruction|meets every instruction"
    # \b first: else "needs no changes except ..." backtracked to "needs no change" and the exception went unseen
    r")\b(?![,;:]?\s+(?:except|but|apart from|save for|other than|besides)\b)",  # "... except the word limit": a fix
    re.IGNORECASE,
)


def finds_nothing_to_fix(critique: str) -> bool:
    """Whether a critique says the response needs no change (``revise --apply when-critiqued``
    then keeps the response, whatever the revision says)."""
    return bool(_NOTHING_TO_FIX.search(critique))


def has_loop(text: str, min_words: int = 15, max_period: int = 60) -> bool:
    """Whether ``text`` loops somewhere: one block of 1 to ``max_period`` words repeated at least
    three times in a row, over at least ``min_words`` words ("of the section of the section of the
    ..."). Words are whitespace-separated, so a loop cut mid-word still counts."""
    words = text.split()
    n = len(words)
    for period in range(1, min(max_period, n // 3) + 1):
        run = 0  # consecutive positions i with words[i] == words[i + period]
        for i in range(n - period):
            run = run + 1 if words[i] == words[i + period] else 0
            if run + period >= max(3 * period, min_words):
                return True
    return False


# ============================================================================ pairwise judge (AlpacaEval-style)
# The LLM judge sees one instruction and two outputs and names the better one. The wording
# follows AlpacaEval's pairwise annotator ("Output (a)" / "Output (b)"); the judge asks twice,
# with the outputs swapped, so a judge that prefers a position cancels out (judges/llm.py).
# Bump PAIRWISE_VERSION whenever the template changes: it is part of the judge cache key.

PAIRWISE_VERSION = "pairwise-v1"

PAIRWISE_SYSTEM = (
    "You are a careful, impartial judge of answers to instructions. You compare two outputs and "
    "name the better one. The order in which they are shown and their lengths must not sway you."
)

PAIRWISE_TEMPLATE = """Which output follows the instruction better? Judge whether it does what was asked, every explicit requirement included (length, format, words to use or avoid), and whether it is correct and helpful.

## Instruction
{instruction}

## Output (a)
{output_a}

## Output (b)
{output_b}

## Your answer
Answer with exactly "Output (a)" or "Output (b)" and nothing else."""


def render_instruction(prompt: Prompt) -> str:
    """A prompt as the judge reads it: the text, or a chat written out turn by turn."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in prompt)


def pairwise_messages(prompt: Prompt, first: str, second: str) -> list[dict[str, str]]:
    """The chat the LLM judge is sent: ``first`` is shown as Output (a), ``second`` as Output (b)."""
    user = PAIRWISE_TEMPLATE.format(instruction=render_instruction(prompt), output_a=first, output_b=second)
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


# Ordered from the most explicit form a judge writes to the loosest. The first pattern that
# matches decides; if it matches both letters the answer is ambiguous and the verdict invalid
# (an answer that names both outputs says nothing a parser can trust).
_LETTER = r"[\(\[\"'*]*\s*(a|b|1|2)\s*[\)\]\"'*]*"
_WHOLE = re.compile(rf"^(?:output|response|answer|assistant)?\s*{_LETTER}\s*[.!]?$")
# Names the output that lost: "Output (b) is worse" is a's win (the pattern after it in _VERDICT_PATTERNS, which
# takes the one output named, read it as b's).
_LOSER = re.compile(rf"(?:output|response|answer|assistant)\s*{_LETTER}\s*(?:is|was|seems|appears)\s+(?:clearly\s+|slightly\s+|much\s+|far\s+)?(?:the\s+)?(?:worse|worst|inferior|weaker|less\s+(?:helpful|accurate|correct|relevant|complete|good))")
# Names one output somewhere, and only one: the loosest reading, after every claim.
_MENTION = re.compile(rf"(?:output|response)\s*{_LETTER}(?![a-z])")
_VERDICT_PATTERNS = [
    re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]"),  # MT-Bench: [[A]], [[B]], [[C]] = tie
    re.compile(rf"(?:output|response|answer|assistant)\s*{_LETTER}\s*(?:is|was|seems|appears)\s+(?:clearly\s+|slightly\s+|much\s+)?(?:the\s+)?(?:better|best|preferred|superior|stronger)"),
    re.compile(rf"(?:better|best|preferred|winning|superior)\s+(?:output|response|answer)\s*(?:is|:)\s*(?:output|response|answer)?\s*{_LETTER}(?![a-z])"),
    re.compile(rf"(?:i\s+(?:would\s+)?(?:prefer|choose|pick|select)|verdict\s*:|winner\s*(?:is|:)|answer\s*:|choice\s*:)\s*(?:output|response|answer)?\s*{_LETTER}(?![a-z])"),
    _LOSER,
    _MENTION,
    re.compile(r"^[\(\[]?(a|b)[\)\]]?(?:[.:,!\n]|$)"),  # starts with "A." or "B:" or "(b)"
]
# Claims ("X is better", "I prefer X", "X is worse") that words just before them deny: "neither X nor Y is better",
# "I do not think X is worse", "it is not true that X is better". A denied claim is no verdict, and once one is
# denied a bare mention of an output is none either ("I don't think Output (b) is worse" is not b's win).
_CLAIMS = tuple(_VERDICT_PATTERNS[1:5])
_DENIED = re.compile(r"(?:\b(?:neither|nor)|(?:\bnot|n't|\bnever)\s+(?:think|believe|say|feel|agree|find|consider|claim)"
                     r"(?:\s+that)?|\bnot\s+(?:true|the\s+case|clear)\s+that)\s*$")
_NEITHER = re.compile(rf"\bneither\s+(?:of\s+)?(?:the\s+)?(?:outputs?|responses?|answers?)?\s*(?:{_LETTER}\s*nor\s+(?:output|response|answer)?\s*{_LETTER}\s*)?(?:is|was|seems)\s+(?:clearly\s+|much\s+)?(?:better|worse|preferred|superior|inferior)")
_OTHER = {"a": "b", "b": "a"}
_TIE_RE = re.compile(r"\b(?:it'?s a tie|tie|equally good|equally bad|both (?:are|outputs are) equal(?:ly good)?|neither is better)\b")
_LETTER_VERDICT = {"a": "a", "1": "a", "b": "b", "2": "b", "c": "tie", "tie": "tie"}


def parse_pairwise_verdict(text: str) -> str:
    """``a``, ``b``, ``tie`` or ``invalid`` from what a judge wrote.

    Reads "Output (a)", "A", "(b)", "[[B]]", "Response B is better", "I prefer output 2", "Output (b) is
    worse" (a), "Tie", "Neither output is better", "Output (a) and Output (b) are equally good" (tie) ... in any
    case. Anything else that names both or neither, or only denies ("I don't think Output (b) is worse"), is
    ``invalid``.
    """
    # Reasoning models think first: the answer follows the last </think> (the opening tag may be in the
    # prompt, as DeepSeek-R1's template puts it), and a block cut before it closed (max_tokens) is no answer.
    t = re.sub(r"<think>.*", "", text.lower().rpartition("</think>")[2], flags=re.DOTALL)
    t = t.strip().strip("*\"'`").strip()  # markdown bold, quotes
    if not t:
        return "invalid"
    # The whole answer, or its first line, is a bare label: that decides, whatever follows.
    for candidate in (t, t.splitlines()[0].strip().strip("*\"'`").strip()):
        whole = _WHOLE.match(candidate)
        if whole:
            return _LETTER_VERDICT[whole.group(1)]
    # "Neither Output A nor B is better" names both outputs to deny both: no claim matches its short second name,
    # so the bare mention of A would read as A's win
    neither = _NEITHER.search(t)
    denied = bool(neither and neither.group(1))
    for pattern in _VERDICT_PATTERNS:
        if pattern is _MENTION and denied:
            continue  # an answer that opens "A." still says so
        matches = list(pattern.finditer(t))
        if pattern in _CLAIMS:
            kept = [m for m in matches if not _DENIED.search(t, 0, m.start())]
            denied = denied or len(kept) < len(matches)
            matches = kept
        found = {_LETTER_VERDICT[m.group(1)] for m in matches}
        if pattern is _LOSER:
            found = {_OTHER[v] for v in found}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:  # both named to tie them ("Output (a) and Output (b) are equally good") is a tie
            return "tie" if pattern is _MENTION and _TIE_RE.search(t) else "invalid"
    if _TIE_RE.search(t) or neither:
        return "tie"
    return "invalid"


# ============================================================================ PIT (Wang et al. 2023)
# One template serves the whole method: the PIT policy reads the request and a reference response
# and writes a better one (SFT target y_w given y_l; RL; `redline improve`), and the reward-gap
# model reads the same chat with the candidate as the assistant turn, so r_gap(x, y, y_ref) scores
# exactly what the policy saw and wrote, and PPO's value model (which starts from the gap model)
# reads the same text as the reward. A chat prompt is written out turn by turn (HH-RLHF dialogues
# keep their context). The paper's own prompt is not public; this wording is ours.

PIT_TEMPLATE = """Below is a request and a response to it. Write a better response to the request: keep what the response does well and fix what it gets wrong. Answer with the new response only.

### Request
{prompt}

### Response
{response}"""


def pit_messages(prompt: Prompt, reference: str) -> list[dict[str, str]]:
    """The user turn of PIT (and of the gap model): the request and the response to improve."""
    return [{"role": "user", "content": PIT_TEMPLATE.format(prompt=render_instruction(prompt), response=reference)}]


def pit_parts(text: str) -> tuple[str, str] | None:
    """(request, reference) from the text of a PIT user turn (``pit_messages``), None when ``text`` is not one.
    The request is cut at the first response heading, so a request that itself holds one is not told apart."""
    head, rest = PIT_TEMPLATE.split("{prompt}")
    between = rest.split("{response}")[0]
    if not text.startswith(head) or between not in text[len(head):]:
        return None
    request, _, reference = text[len(head):].partition(between)
    return request, reference


_ECHOED_HEADING = re.compile(
    r"^\s*(?:#+\s*)?(?:\*\*)?(?:(?:new|better|improved|revised|refined|rewritten)\s+)?response(?:\*\*)?\s*:?(?:\*\*)?\s*\n",
    re.IGNORECASE,
)


def parse_rewrite(text: str) -> str | None:
    """A new response from what a model wrote: the text, less an echoed heading ("### Response",
    "Improved response:"); None when nothing is left (a parse failure, never applied)."""
    body = _ECHOED_HEADING.sub("", text.strip() + "\n", count=1).strip()
    return body or None


# ============================================================================ Self-Refine (Madaan et al. 2023)
# The same model gives feedback on its response, then refines the response given that feedback;
# it stops when the feedback says there is nothing to fix. The stop phrase is asked for in the
# feedback prompt and read back by ``parse_feedback``. The paper writes a prompt per task with
# few-shot examples and scored traits; these are one zero-shot pair for any request.

NO_ISSUES = "NO ISSUES"

FEEDBACK_TEMPLATE = """Below is a request and a response to it. Give feedback on the response: name every way it fails the request (a requirement missed or broken, an error, a part that does not help), one per line, each line starting with "- ". Do not rewrite the response. If there is nothing to fix, answer with exactly NO ISSUES and nothing else.

### Request
{prompt}

### Response
{response}"""

ITERATE_TEMPLATE = """Below is a request, a response to it and feedback on the response. Rewrite the response so that it fixes every problem the feedback names and keeps everything else. Answer with the new response only.

### Request
{prompt}

### Response
{response}

### Feedback
{feedback}"""


def feedback_messages(prompt: Prompt, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": FEEDBACK_TEMPLATE.format(prompt=render_instruction(prompt), response=response)}]


def iterate_messages(prompt: Prompt, response: str, feedback: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": ITERATE_TEMPLATE.format(prompt=render_instruction(prompt), response=response,
                                                                 feedback=feedback)}]


@dataclass
class FeedbackOutput:
    feedback: str
    done: bool  # the feedback finds nothing to fix
    parsed: bool  # False: empty feedback (nothing to refine with, and no stop phrase)


def _stop_line(line: str) -> bool:
    bare = line.strip().strip("*_#`\"'.!:- ").strip()
    if bare.lower().startswith("feedback"):
        bare = bare[len("feedback"):].strip(" :*")
    return bare.upper() == NO_ISSUES


def parse_feedback(text: str) -> FeedbackOutput:
    """Read the stop phrase: the feedback is done when its first or last non-empty line is NO ISSUES
    (markdown, quotes, final punctuation and a "Feedback:" label ignored). The phrase anywhere else
    ("it has no issues with tone, but ...") is not a stop: it is part of the feedback."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return FeedbackOutput(feedback="", done=False, parsed=False)
    done = _stop_line(lines[0]) or _stop_line(lines[-1])
    return FeedbackOutput(feedback=text.strip(), done=done, parsed=True)
