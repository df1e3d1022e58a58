"""The oracle: share of instructions met, with penalties that cannot be gamed; and its repairs."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from redline.simulate import topics as T
from redline.simulate.instructions import Instruction, fix_all
from redline.simulate.oracle import check_all, quality, repair
from redline.simulate.tasks import Task, make_tasks, template_response

I = Instruction
INSTRUCTIONS = (I("no_commas"), I("title"))
META = {"topic": "coffee", "instructions": [i.to_dict() for i in INSTRUCTIONS]}
PROMPT = "Write a short blog post about coffee. Do not use any commas. Include a title wrapped in << and >>."
GOOD = (
    "<<Notes on Coffee>>\n\nPeople have argued about coffee for a long time. A good way to understand coffee is to start "
    "small. Much of what we know about coffee came from patient observation. The best part of coffee is the sense of discovery."
)


def test_a_response_meeting_everything_scores_one_and_each_broken_instruction_costs_its_share():
    assert quality(META, GOOD, PROMPT) == 1.0
    assert quality(META, GOOD.replace("<<Notes on Coffee>>\n\n", ""), PROMPT) == 0.5
    assert quality(META, GOOD.replace("<<Notes on Coffee>>\n\n", "").replace("time.", "time, really."), PROMPT) == 0.0


def test_empty_and_near_empty_answers_score_zero_even_when_they_meet_instructions():
    assert quality(META, "", PROMPT) == 0.0
    assert quality(META, "<<Coffee>>", PROMPT) == 0.0  # a title meets both instructions, but says nothing
    assert quality([I("no_commas")], "Coffee is nice.") == 0.0
    assert 0 < quality(META, "<<Coffee>> Coffee is old and loved by people everywhere.", PROMPT) < 0.5


def test_repetition_loops_score_low():
    loop = "<<Coffee>>\n\n" + " ".join(["Coffee is the best thing in the morning."] * 12)
    report = check_all(META, loop, PROMPT)
    assert report.all_met and "repetition" in report.faults
    assert report.quality < 0.2
    words_loop = "<<Coffee>> " + "coffee " * 80
    assert quality(META, words_loop, PROMPT) < 0.2


def test_copying_the_prompt_scores_low():
    pasted = "<<Coffee>>\n\n" + PROMPT.replace(",", "")
    report = check_all(META, pasted, PROMPT)
    assert report.all_met and "copied" in report.faults
    assert report.quality < 0.3
    # a required literal (the closing phrase) is not copying
    meta = {"topic": "coffee", "instructions": [{"type": "end_phrase", "phrase": "Is there anything else I can help with?"}]}
    prompt = "Write about coffee. End your answer with the exact phrase 'Is there anything else I can help with?'."
    answer = GOOD + " Is there anything else I can help with?"
    assert quality(meta, answer, prompt) == 1.0


def test_off_topic_text_scores_low():
    other = GOOD.replace("coffee", "chess").replace("Coffee", "Chess")  # title included
    report = check_all(META, other, PROMPT)
    assert report.all_met and report.faults == ["off_topic"]
    assert report.quality <= 0.25
    assert quality(META, GOOD.replace("coffee", "coffees"), PROMPT) == 1.0  # plurals count as the topic
    for topic, text in (("cleaning", "We clean the house."), ("running", "She runs daily."), ("public libraries", "A library.")):
        assert check_all({"topic": topic, "instructions": [{"type": "title"}]}, text).facts["on_topic"], topic


def test_check_all_gives_the_verdict_in_parts():
    report = check_all(META, "Coffee, tea, and milk are old drinks that people love to share with friends.", PROMPT)
    assert [c.instruction.type for c in report.broken] == ["no_commas", "title"]
    assert "2 commas" in report.broken[0].detail
    assert report.facts["words"] == 14 and report.facts["on_topic"]


def test_meta_a_task_and_a_list_of_instructions_are_all_accepted():
    task = Task("t", "coffee", "blog post", INSTRUCTIONS, PROMPT)
    assert quality(task, GOOD) == quality(META, GOOD, PROMPT) == quality(list(INSTRUCTIONS), GOOD) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6))
@example(243607, 44)  # two keyword fixes once filled one sentence frame twice: the oracle's repetition penalty
def test_quality_is_always_in_the_unit_interval(task_seed, seed):
    task = make_tasks(1, task_seed)[0]
    response = template_response(task, random.Random(seed))
    assert 0.0 <= quality(task, response) <= 1.0
    if not check_all(task, response).faults:  # the fixers alone reach the top score
        assert quality(task, fix_all(task.instructions, response, task.topic)) == 1.0


def test_repair_removes_every_fault():
    task = Task("t", "coffee", "blog post", INSTRUCTIONS, PROMPT)
    for bad in (
        "",
        " ".join(["Coffee is the best thing in the morning."] * 12),
        PROMPT + " " + GOOD,
        GOOD.replace("coffee", "chess").replace("Coffee", "Chess"),
    ):
        report = check_all(task, bad)
        assert report.faults, bad
        repaired = repair(task, bad, report.faults)
        assert check_all(task, repaired).faults == [], repaired
    assert repair(task, GOOD, []) == GOOD
    for topic in T.TOPICS:  # every topic's own sentences count as on-topic
        assert check_all({"topic": topic, "instructions": [{"type": "title"}]}, T.write_prose(topic, random.Random(0))).facts["on_topic"]
