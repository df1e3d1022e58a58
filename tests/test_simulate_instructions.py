"""The instruction catalogue: checkers, phrasings, parsing, conflicts, fixers and their composition."""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redline import RedlineError
from redline.simulate import topics as T
from redline.simulate.instructions import (
    CONFLICTS,
    FIX_ORDER,
    SPECS,
    TYPES,
    Instruction,
    InstructionError,
    check,
    describe,
    fix,
    fix_all,
    parse_instruction,
    parse_instructions,
    sample_instructions,
)
from redline.simulate.tasks import make_tasks, template_response
from redline.simulate.text import count_word, sentences, words

I = Instruction
PROSE = "Coffee is older than most people think. It travelled the world by ship. Today it is everywhere."

# (instruction, a text that meets it, a text that breaks it, a fragment the broken detail must name)
CASES = [
    (I("words_at_most", n=5), "One two three four five.", "One two three four five six.", "6 words"),
    (I("words_at_least", n=5), "One two three four five.", "One two three four.", "4 words"),
    (I("sentences_at_most", n=2), "Coffee is good. I like it.", "One. Two. Three.", "3 sentences"),
    (I("sentences_at_least", n=3), "One. Two. Three.", "Coffee is good. I like it.", "2 sentences"),
    (I("paragraphs_exact", n=2), "First part here.\n\nSecond part here.", "Only one paragraph here.", "1 paragraph"),
    (I("keyword_include", keywords=("budget", "morning")), "A morning budget.", "A morning walk.", "'budget'"),
    (I("keyword_avoid", keywords=("very",)), "It is quite good.", "It is very good and very old.", "'very' (twice)"),
    (I("keyword_frequency", keyword="season", n=2), "Season after season.", "One season only.", "once"),
    (I("lowercase"), "all lowercase here.", "Not all lowercase.", "'Not'"),
    (I("uppercase"), "ALL CAPITALS HERE.", "ALL CAPITALS but not here.", "'but'"),
    (I("bullets_exact", n=2), "Points:\n* one\n* two", "Points:\n* one\n* two\n- three", "3 bullet points"),
    (I("title"), "<<On Coffee>>\n\nCoffee is old.", "On Coffee\n\nCoffee is old.", "no title"),
    (I("highlights_at_least", n=2), "Coffee is *old* and *loved*.", "Coffee is *old*.", "1 highlighted section"),
    (I("json_format"), '{"response": "Coffee is old."}', "Coffee is old.", "Coffee is old."),
    (I("sections", n=2), "SECTION 1\nOld.\n\nSECTION 2\nNew.", "SECTION 1\nOld and new.", "1 SECTION"),
    (I("end_phrase", phrase="Any other questions?"), "Coffee is old. Any other questions?", "Any other questions? Coffee is old.", "Coffee is old."),
    (I("quotes"), '"Coffee is old."', "Coffee is old.", "starts with 'C'"),
    (I("no_commas"), "Coffee is old and loved.", "Coffee is old, loved, and cheap.", "2 commas"),
    (I("postscript"), "Coffee is old.\n\nP.S. Drink it hot.", "Coffee is old. PS drink it hot.", "P.S."),
    (I("placeholders", n=2), "Write to [name] at [address].", "Write to [name].", "1 placeholder"),
]


def test_the_catalogue_covers_every_type_with_three_phrasings_of_everything():
    assert len(TYPES) >= 15
    assert {case[0].type for case in CASES} == set(TYPES)
    for kind, spec in SPECS.items():
        assert len(spec.prompts) >= 3 and len(spec.met) >= 3 and len(spec.broken) >= 3, kind
    assert set(FIX_ORDER) == set(TYPES)


@pytest.mark.parametrize("inst, good, bad, fragment", CASES, ids=[c[0].type for c in CASES])
def test_checker_passes_and_fails_with_specifics(inst, good, bad, fragment):
    assert check(inst, good).met, check(inst, good).facts
    verdict = check(inst, bad)
    assert not verdict.met
    assert fragment in verdict.detail, verdict.detail
    for template in SPECS[inst.type].broken + SPECS[inst.type].met:  # every phrasing formats
        assert "{" not in verdict.sentence(random.Random(template))


def test_wrappers_do_not_change_counts():
    inst = I("bullets_exact", n=2)
    plain = "Points:\n* one\n* two"
    assert check(inst, json.dumps({"response": plain})).met
    assert check(inst, f'"{plain}"').met
    assert check(I("end_phrase", phrase="Bye."), '"Coffee is old. Bye."').met
    assert not check(I("no_commas"), json.dumps({"a": "x", "b": "y"})).met  # the raw text has a comma


def test_sections_keep_the_text_written_after_a_marker():
    text = "SECTION 1: Sharks are old. They swim far.\n\nSECTION 2: Sharks are fast. They hunt well."
    assert sentences(text) == ["Sharks are old.", "They swim far.", "Sharks are fast.", "They hunt well."]
    fixed = fix(I("sections", n=3), text, "sharks")
    assert check(I("sections", n=3), fixed).met
    assert all(s in fixed for s in ("Sharks are old.", "They swim far.", "Sharks are fast.", "They hunt well."))
    assert fix(I("sections", n=1), text, "sharks") == "SECTION 1: Sharks are old. They swim far.\n\nSharks are fast. They hunt well."


def test_a_horizontal_rule_is_not_a_bullet():
    assert check(I("bullets_exact", n=1), "* one\n\n* * *\n\n- - -\n\n***").met
    assert fix(I("bullets_exact", n=1), "* * one\n* two") == "* * one\ntwo"


def test_sentences_ignore_titles_headers_and_the_ps_marker():
    text = "<<Title>>\n\nSECTION 1\nOne. Two!\n* three\n\nP.S. Four? Yes 3.5 is a number."
    assert sentences(text) == ["One.", "Two!", "three", "Four?", "Yes 3.5 is a number."]


def test_describe_uses_the_parameters_and_varies():
    inst = I("bullets_exact", n=3)
    texts = {describe(inst, random.Random(i)) for i in range(30)}
    assert len(texts) == 3 and all("3" in t for t in texts)
    assert "1 placeholder " in describe(I("placeholders", n=1))


def test_instructions_round_trip_through_json():
    rng = random.Random(0)
    for _ in range(200):
        drawn = sample_instructions(rng, "coffee")
        assert parse_instructions(json.loads(json.dumps([i.to_dict() for i in drawn]))) == drawn


def test_parse_errors_are_clear():
    with pytest.raises(InstructionError, match="unknown instruction type 'haiku'"):
        parse_instruction({"type": "haiku"})
    with pytest.raises(InstructionError, match="'n' must be a whole number"):
        parse_instruction({"type": "bullets_exact", "n": "three"})
    with pytest.raises(InstructionError, match="needs n"):
        parse_instruction({"type": "bullets_exact"})
    with pytest.raises(InstructionError, match="takes no parameters; got n"):
        parse_instruction({"type": "title", "n": 2})
    with pytest.raises(InstructionError, match="'lowercase' and 'uppercase' conflict"):
        parse_instructions([{"type": "lowercase"}, {"type": "uppercase"}])
    with pytest.raises(InstructionError, match="conflict"):
        parse_instructions([{"type": "json_format"}, {"type": "bullets_exact", "n": 2}])
    with pytest.raises(InstructionError, match="forbids 'budget'"):
        parse_instructions([{"type": "keyword_avoid", "keywords": ["budget"]}, {"type": "keyword_include", "keywords": ["budget"]}])
    with pytest.raises(InstructionError, match="appears twice"):
        parse_instructions([{"type": "title"}, {"type": "title"}])
    assert issubclass(InstructionError, RedlineError)


@pytest.mark.parametrize("keyword", ["budget.", "budget,", "C++", "#budget", "co-op", "two words", ""])
def test_a_keyword_with_punctuation_is_refused_not_left_unmatchable(keyword):
    # "budget." was taken as a word, and no answer could meet it: the checkers count whole words.
    for obj in ({"type": "keyword_include", "keywords": [keyword]}, {"type": "keyword_avoid", "keywords": [keyword]},
                {"type": "keyword_frequency", "keyword": keyword, "n": 2}):
        with pytest.raises(InstructionError, match="must be a single word"):
            parse_instruction(obj)
    assert parse_instruction({"type": "keyword_include", "keywords": [" don't "]}).keywords == ("don't",)


def test_drawn_sets_never_conflict_and_use_every_type():
    rng = random.Random(1)
    seen = set()
    for _ in range(500):
        drawn = sample_instructions(rng, "tea")
        assert 1 <= len(drawn) <= 3
        kinds = [i.type for i in drawn]
        seen |= set(kinds)
        for a in kinds:
            assert not (CONFLICTS[a] & (set(kinds) - {a}))
        parse_instructions([i.to_dict() for i in drawn])  # no conflict by the parser's rules either
    assert seen == set(TYPES)


def test_fixers_own_sentences_are_clean():
    """What fixers add must never break another instruction: no commas, no avoidable words."""
    templates = T.FILLERS + T.KEYWORD_SENTENCES + T.PLACEHOLDER_SENTENCES + T.BULLET_ITEMS + T.POSTSCRIPTS + T.TITLES
    templates += T.TOPIC_SENTENCES + T.END_PHRASES
    for template in templates:
        assert "," not in template, template
        for word in T.AVOIDABLE:
            assert not count_word(template, word), (template, word)
    assert len(T.TOPICS) >= 200 and len(set(T.TOPICS)) == len(T.TOPICS)
    for topic in T.TOPICS:
        assert not any(count_word(topic, w) for w in T.AVOIDABLE) and "," not in topic


def test_a_met_instruction_is_left_alone():
    text = "Coffee, tea and *milk*.\n\n* one\n* two"
    for inst in (I("bullets_exact", n=2), I("highlights_at_least", n=1), I("words_at_most", n=50)):
        assert fix(inst, text, "coffee") == text


def test_fixes_are_small():
    assert fix(I("no_commas"), "Coffee, tea, and milk.") == "Coffee tea and milk."
    assert fix(I("keyword_avoid", keywords=("very",)), "Very old and very good.") == "Old and good."
    assert fix(I("keyword_avoid", keywords=("great",)), "A great cup.") == "A fine cup."
    assert fix(I("quotes"), "Coffee is old.") == '"Coffee is old."'
    assert fix(I("end_phrase", phrase="Bye."), "Coffee is old") == "Coffee is old. Bye."
    assert fix(I("bullets_exact", n=1), "* one\n* two\n* three") == "* one\ntwo\nthree"
    assert json.loads(fix(I("json_format"), "Coffee is old.")) == {"response": "Coffee is old."}
    assert fix(I("lowercase"), '{"response": "Coffee"}') == '{"response": "coffee"}'


# ----------------------------------------------------------------------------- generated texts

FUZZ_PIECES = [
    "Coffee", "is", "old", "and", "very", "good", "tea", "It", "really", "matters", "budget", ",", ".", "!", "?",
    "\n", "\n\n", "\n* ", "\n- ", "SECTION 1\n", "SECTION 2\n", "<<A Title>>", "\nP.S. ", "[name]", "*bold*",
    '"', "1,000", "3.5", "MORNING", "season",
]


@st.composite
def texts(draw):
    """Responses of every shape: template drafts and responses, fuzz from pieces, wrapped, empty."""
    topic = draw(st.sampled_from(T.TOPICS))
    rng = random.Random(draw(st.integers(0, 2**32)))
    shape = draw(st.sampled_from(["draft", "response", "response", "fuzz", "fuzz", "empty"]))
    if shape == "draft":
        text = T.write_prose(topic, rng)
    elif shape == "response":
        task = make_tasks(1, rng.randrange(10**6))[0]
        topic = task.topic
        text = template_response(task, rng)
    elif shape == "fuzz":
        text = " ".join(draw(st.lists(st.sampled_from(FUZZ_PIECES), min_size=1, max_size=40)))
    else:
        text = draw(st.sampled_from(["", " ", "\n\n", "*", "P.S."]))
    wrap = draw(st.sampled_from(["none", "none", "none", "quotes", "json"]))
    if wrap == "quotes":
        text = f'"{text}"'
    elif wrap == "json":
        text = json.dumps({"response": text})
    return topic, text


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(texts(), st.sampled_from(TYPES), st.integers(0, 2**32))
def test_every_fixer_makes_its_checker_pass(sample, kind, seed):
    topic, text = sample
    inst = SPECS[kind].sample(random.Random(seed), topic, set())
    fixed = fix(inst, text, topic)
    assert check(inst, fixed).met, (inst, text, fixed)


@SETTINGS
@given(texts(), st.integers(0, 2**32))
def test_fix_all_meets_every_instruction_of_a_compatible_set(sample, seed):
    topic, text = sample
    instructions = sample_instructions(random.Random(seed), topic)
    fixed = fix_all(instructions, text, topic)
    assert all(check(i, fixed).met for i in instructions), ([i.to_dict() for i in instructions], text, fixed)


@SETTINGS
@given(texts(), st.integers(0, 2**32))
def test_fixing_one_instruction_breaks_no_other_that_was_met(sample, seed):
    topic, text = sample
    instructions = sample_instructions(random.Random(seed), topic, k=3)
    met_before = {i for i in instructions if check(i, text).met}
    for target in instructions:
        fixed = fix_all(instructions, text, topic, only=[target])
        assert check(target, fixed).met, (target, text, fixed)
        for other in met_before:
            assert check(other, fixed).met, (target, other, text, fixed)


def test_the_order_of_wrappers_and_endings_is_fixed():
    """P.S., closing phrase and quotes: the phrase is the last words inside the quotes, after the P.S."""
    instructions = (I("postscript"), I("end_phrase", phrase="Thank you for reading."), I("quotes"))
    for order in (instructions, instructions[::-1], instructions[1:] + instructions[:1]):
        fixed = fix_all(order, PROSE, "coffee")
        assert all(check(i, fixed).met for i in instructions)
        assert fixed.startswith('"') and fixed.endswith('Thank you for reading."')
        assert fixed.index("P.S.") < fixed.index("Thank you for reading.")
    # a phrase already in place stays last when a postscript is added
    ended = PROSE + " Thank you for reading."
    fixed = fix_all(instructions, ended, "coffee", only=[I("postscript")])
    assert fixed.endswith("Thank you for reading.") and "P.S." in fixed


def test_lengths_are_fixed_around_what_other_fixers_placed():
    long_text = " ".join(T.fill(s, "coffee") for s in T.PROSE[:20])
    instructions = (I("words_at_most", n=100), I("keyword_frequency", keyword="season", n=4), I("bullets_exact", n=5))
    fixed = fix_all(instructions, long_text, "coffee")
    assert all(check(i, fixed).met for i in instructions)
    assert len(words(fixed)) <= 100 and count_word(fixed, "season") >= 4
    assert re.search(r"^\* ", fixed, re.M)


def test_no_commas_fix_removes_a_json_objects_own_commas():
    """The commas between a JSON object's fields are in the raw text the checker reads: they go too."""
    for text, strings in (('{"title": "Coffee", "body": "Coffee is old."}', ("Coffee", "Coffee is old.")),
                          ('```json\n{\n  "id": "a1",\n  "name": "Sam"\n}\n```', ("a1", "Sam"))):
        fixed = fix(I("no_commas"), text, "coffee")
        assert check(I("no_commas"), fixed).met, fixed
        assert all(x in json.loads(fixed)["response"] for x in strings)  # the strings stay, as one field
    instructions = (I("no_commas"), I("json_format"))
    fixed = fix_all(instructions, '{"title": "Coffee", "body": "Coffee is old."}', "coffee")
    assert all(check(i, fixed).met for i in instructions), fixed


def test_length_fixers_shrink_text_written_after_a_section_marker():
    """'SECTION 1: ...' lines hold sentences (they count): a length fix may cut them, keeping the marker."""
    text = ("SECTION 1: Coffee is old. It came from the hills of Ethiopia long ago. People drink it every morning.\n\n"
            "SECTION 2: Tea is older still. It came from the south of China. People love it too.")
    for inst in (I("words_at_most", n=20), I("sentences_at_most", n=3)):
        instructions = (inst, I("sections", n=2))
        fixed = fix_all(instructions, text, "coffee")
        assert all(check(i, fixed).met for i in instructions), (inst, fixed)
        assert fixed.startswith("SECTION 1: Coffee is old.")


def test_a_line_of_several_section_markers_is_unmarked_whole():
    """'SECTION 1- SECTION 2- SECTION 3' is one header line; re-sectioning must not leave its inner markers."""
    text = ("SECTION 1- SECTION 2- SECTION 3\nCoffee is old. It came from Ethiopia.\n\n"
            "People drink it every morning. Some drink it at night. It keeps them awake.")
    for n in (1, 3, 4):
        fixed = fix(I("sections", n=n), text, "coffee")
        assert check(I("sections", n=n), fixed).met, (n, fixed)
        assert "Coffee is old." in fixed and "It keeps them awake." in fixed


def test_a_blank_title_is_no_title():
    """IFEval's rule: the brackets must hold something."""
    assert not check(I("title"), "<< >>\n\nCoffee is old.").met
    assert not check(I("title"), "<<>> Coffee is old.").met
    assert check(I("title"), "<<On Coffee>>\n\nCoffee is old.").met
    assert check(I("title"), fix(I("title"), "<< >>\n\nCoffee is old.", "coffee")).met


def test_the_worlds_patterns_are_compiled_once_and_find_what_they_found(monkeypatch):
    # one pattern per topic and template (some 16k) overflowed re's own cache of 512: a 1000-prompt build compiled
    # 42,801 patterns, each again every time it came back (30% of the build's time)
    import re._compiler

    from redline.simulate import instructions, text, topics
    from redline.simulate.instructions import _fresh
    from redline.simulate.topics import mentions

    def run():
        return [(_fresh(T.FILLERS, PROSE, topic), _fresh(T.KEYWORD_SENTENCES, PROSE, topic, "ship"), mentions(PROSE, topic),
                 count_word(f"{topic}, {topic.upper()} and {topic}s", topic)) for topic in ("coffee",) + T.TOPICS[:30]]

    with monkeypatch.context() as m:  # each pattern compiled where it is used, as before
        for module in (instructions, text, topics):
            m.setattr(module, "pattern", re.compile, raising=False)
        uncached = run()
    assert run() == uncached and uncached[0][2:] == (True, 2)  # PROSE names coffee; "coffees" is another word
    compiled: list[str] = []
    real = re._compiler.compile
    monkeypatch.setattr(re._compiler, "compile", lambda source, flags=0: compiled.append(source) or real(source, flags))
    assert run() == uncached and compiled == []  # some 1,600 patterns, more than re's cache holds
