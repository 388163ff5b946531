"""The loopback OpenAI server the judge tests import; it lives in the package (safealign/eval/fake_openai.py) so
that `bench perf` can measure the judge against it outside the tests."""
from safealign.eval.fake_openai import (EXPLANATION, MARKED, FakeOpenAI, answers, default_answer,  # noqa: F401
                                        scores_for, tokens)
