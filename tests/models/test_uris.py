"""Model URIs: the three forms, the CLI's short forms, and one clear error for anything else."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.models.uris import (
    ModelsUri,
    RunsUri,
    check_alias,
    check_model_name,
    parse_model_uri,
    parse_version_ref,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("runs:/5f0c1d/model", RunsUri(run_id="5f0c1d", path="model")),
        ("runs:/5f0c1d/models/churn/", RunsUri(run_id="5f0c1d", path="models/churn")),
        ("models:/churn/3", ModelsUri(name="churn", version=3)),
        ("models:/churn@champion", ModelsUri(name="churn", alias="champion")),
        ("models:/my.model-v2_x/12", ModelsUri(name="my.model-v2_x", version=12)),
        ("models:/churn/latest", ModelsUri(name="churn")),
        ("models:/churn@latest", ModelsUri(name="churn")),
    ],
)
def test_the_accepted_forms_parse(uri: str, expected: RunsUri | ModelsUri) -> None:
    parsed = parse_model_uri(uri)
    assert parsed == expected
    assert parse_model_uri(str(parsed)) == parsed  # str() writes it back


@pytest.mark.parametrize(
    "uri",
    [
        "churn/3",  # a short form is not a URI
        "model.pkl",
        "s3://bucket/model",
        "runs:/",
        "runs:/abc",  # no path
        "runs:/abc/../secret",
        "runs:/ab c/model",
        "models:/churn",
        "models:/churn/0",
        "models:/churn/-1",
        "models:/churn/3.0",
        "models:/churn/٣",  # a non-ASCII digit
        "models:/churn@Champion",  # aliases are lowercase
        "models:/churn@1",  # an alias is not a number
        "models:/churn@",
        "models:/-churn/1",
        "models:/a/b/1",
        "",
    ],
)
def test_anything_else_is_one_invalid_input_naming_the_forms(uri: str) -> None:
    with pytest.raises(InvalidInput, match=r"models:/NAME/VERSION|runs:/RUN_ID/PATH") as info:
        parse_model_uri(uri)
    assert repr(uri) in info.value.message


def test_a_non_string_is_refused() -> None:
    with pytest.raises(InvalidInput, match="is a string"):
        parse_model_uri(3)  # type: ignore[arg-type]


def test_short_forms_for_the_cli() -> None:
    assert parse_version_ref("churn/3") == ModelsUri(name="churn", version=3)
    assert parse_version_ref("churn@champion") == ModelsUri(name="churn", alias="champion")
    assert parse_version_ref("models:/churn/2") == ModelsUri(name="churn", version=2)
    assert parse_version_ref("churn", allow_bare=True) == ModelsUri(name="churn")
    with pytest.raises(InvalidInput, match="NAME/VERSION or NAME@ALIAS"):
        parse_version_ref("churn")
    with pytest.raises(InvalidInput, match="NAME/VERSION or NAME@ALIAS"):
        parse_version_ref("churn/x")


def test_selector_and_ref() -> None:
    assert ModelsUri(name="m", version=3).selector == 3
    assert ModelsUri(name="m", alias="champion").selector == "champion"
    assert ModelsUri(name="m").selector == "latest"
    assert ModelsUri(name="m", alias="champion").ref == "m@champion"
    assert str(ModelsUri(name="m", version=3)) == "models:/m/3"


def test_names_and_aliases_are_checked() -> None:
    assert check_model_name("churn-v2") == "churn-v2"
    assert check_alias("champion") == "champion"
    for bad in ("", "a/b", "a@b", "x" * 129, " churn"):
        with pytest.raises(InvalidInput, match="invalid model name"):
            check_model_name(bad)
    for bad in ("latest", "Champion", "1st", "a b", ""):
        with pytest.raises(InvalidInput, match="invalid alias"):
            check_alias(bad)


def test_a_trailing_newline_is_refused_everywhere() -> None:
    with pytest.raises(InvalidInput, match="invalid model name"):
        check_model_name("churn\n")
    with pytest.raises(InvalidInput, match="invalid alias"):
        check_alias("production\n")
    for uri in (
        "models:/churn\n/1",
        "models:/churn@production\n",
        "runs:/5f0c\n/model",
    ):
        with pytest.raises(InvalidInput, match="malformed model"):
            parse_model_uri(uri)
    for ref in ("churn\n@champion", "churn@production\n"):
        with pytest.raises(InvalidInput, match="malformed model"):
            parse_version_ref(ref)
    with pytest.raises(InvalidInput, match="malformed model"):
        parse_version_ref("churn\n", allow_bare=True)
