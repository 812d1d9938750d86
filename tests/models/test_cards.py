"""Model cards from a real logged model trained on a dataset version, on SQLite and PostgreSQL:
what the generated Markdown says, edits kept and audited, and what an edit summary counts."""

from __future__ import annotations

import pytest

import keel.data
from keel.errors import Conflict, InvalidInput
from keel.models import api, governance
from keel.models.cards import FILL_IN, edit_summary
from keel.settings import Settings
from tests.models.test_cli import _logged
from tests.models.training import diabetes


def test_a_generated_card_traces_the_version(settings: Settings) -> None:
    X, y = diabetes()
    data = keel.data.log_dataset(X.assign(target=y), "diabetes")
    keel.models.register(_logged(0.5, data="diabetes@1"), "diabetes", description="ridge")
    api.set_alias("diabetes", "champion", 1)
    version = api.get_version("diabetes", 1)
    card = governance.generate_card("diabetes@champion")
    assert (card.name, card.version, card.generated) == ("diabetes", 1, True)
    md = card.markdown
    assert md.startswith("# diabetes/1\n")
    for expected in (
        "| flavor | sklearn ",
        f"| digest | `{version.digest}` |",
        "| aliases | champion |",
        "## Description\n\nridge",
        f"## Intended use\n\n{FILL_IN}",
        "## Limitations",
        "| age | float | no |",  # the signature's inputs
        f"| diabetes@1 | train | parquet | 442 | `{data.digest}` |",
        "Run **ridge-0.5**",
        "commit `c0ffee1234567890`",
        "| alpha | 0.5 |",
        "| rmse | ",
        "No evaluations recorded",
        "scikit-learn==",
    ):
        assert expected in md, expected
    assert governance.get_card("diabetes/1") == card
    event = api.history("diabetes")[-1]
    assert (event.action, event.version) == ("generate_card", 1)
    assert event.detail["lines_removed"] == 0 and event.detail["lines_added"] > 20


def test_edits_are_kept_and_audited(settings: Settings) -> None:
    keel.models.register(_logged(0.5), "diabetes")
    generated = governance.generate_card("diabetes/1").markdown
    edited = generated.replace(f"{FILL_IN}: where", "Not for children; where")
    card = governance.edit_card("diabetes/1", edited)
    assert not card.generated and card.markdown == edited
    event = api.history("diabetes")[-1]
    assert event.action == "edit_card"
    assert event.detail == {"lines_added": 1, "lines_removed": 1, "sections": ["Limitations"]}
    with pytest.raises(Conflict, match="edited by"):
        governance.generate_card("diabetes/1")
    assert governance.get_card("diabetes/1").markdown == edited
    with pytest.raises(InvalidInput, match="non-empty Markdown"):
        governance.edit_card("diabetes/1", "  \n")
    assert governance.generate_card("diabetes/1", replace=True).markdown == generated


def test_edit_summary_counts_lines_and_sections() -> None:
    before = "# m\n\n## A\n\nold\n\n## B\n\nsame\n"
    after = "# m\n\n## A\n\nnew\nmore\n\n## B\n\nsame\n\n## C\n\nadded\n"
    assert edit_summary(before, after) == {
        "lines_added": 6,
        "lines_removed": 1,
        "sections": ["A", "C"],
    }
    assert edit_summary(None, "# x\n")["lines_added"] == 1
