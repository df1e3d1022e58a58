"""The simulated-annotator environment: verifiable writing tasks, an oracle, noisy annotators.

Every claim redline measures is a claim about what people prefer; here there are no people, so
this package builds a world where the truth is known (after IFEval's verifiable instructions and
AlpacaFarm's simulated annotators):

- ``instructions``: 20 types of verifiable instruction (length, keywords, case, format, start
  and end, punctuation, postscripts, placeholders), each with prompt phrasings, a checker,
  critique sentences and a minimal fixer; ``fix_all`` composes fixers safely;
- ``oracle``: ``quality`` (share of instructions met, with penalties against gaming) and
  ``check_all`` (the verdict in parts);
- ``annotators``: noisy annotators that rank, compare, critique, revise and demonstrate, and
  ``measure_agreement``;
- ``tasks``: prompts (topic, kind of writing, 1–3 instructions) and the template responder;
- ``build``: ``redline simulate build`` (all four kinds of feedback plus a test split) and
  ``redline simulate score``.

Import cost is small: nothing here needs torch unless a model responder is asked for.
"""

from redline.simulate.annotators import Annotator, Critique, make_pool, measure_agreement
from redline.simulate.build import BuildConfig, build, score_file
from redline.simulate.instructions import (
    CONFLICTS,
    FIX_ORDER,
    SPECS,
    TYPES,
    Check,
    Instruction,
    InstructionError,
    check,
    describe,
    fix,
    fix_all,
    parse_instructions,
    sample_instructions,
)
from redline.simulate.oracle import Report, check_all, quality
from redline.simulate.tasks import Task, make_tasks, template_response

__all__ = [
    "Annotator", "BuildConfig", "CONFLICTS", "Check", "Critique", "FIX_ORDER", "Instruction", "InstructionError",
    "Report", "SPECS", "TYPES", "Task", "build", "check", "check_all", "describe", "fix", "fix_all", "make_pool",
    "make_tasks", "measure_agreement", "parse_instructions", "quality", "sample_instructions", "score_file",
    "template_response",
]
