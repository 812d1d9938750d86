"""The pointer file format: what parse_pointer accepts and refuses, how dump_pointer writes it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keel.artifacts.models import decode_manifest
from keel.data.models import Pointer, dump_pointer, parse_pointer
from keel.errors import InvalidInput

DIGEST = "ab" * 32
GOOD = f"keel_pointer: 1\nkind: directory\nhash: {DIGEST}\nsize: 10\nfiles: 2\n"


def test_dump_then_parse_gives_the_same_pointer() -> None:
    pointer = Pointer(kind="file", hash=DIGEST, size=5, files=1, name="iris", version="3")
    text = dump_pointer(pointer)
    assert text.startswith("# Keel data pointer")
    assert text.splitlines()[1] == "keel_pointer: 1"
    assert parse_pointer(text, source="p.keel") == pointer


def test_a_minimal_pointer_parses_with_no_name() -> None:
    pointer = parse_pointer(GOOD, source="p.keel")
    assert (pointer.kind, pointer.hash, pointer.size, pointer.files) == ("directory", DIGEST, 10, 2)
    assert pointer.name is None and pointer.version is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (GOOD + "colour: red\n", "colour: unknown field"),
        (GOOD.replace("files: 2\n", ""), "files: missing"),
        (GOOD.replace("kind: directory", "kind: link"), "kind: 'link' is neither"),
        (GOOD.replace(DIGEST, DIGEST.upper()), "hash: .* is not 64 lowercase hex"),
        (GOOD.replace(DIGEST, "abc"), "hash: 'abc' is not 64"),
        (GOOD.replace("size: 10", "size: -1"), r"size: -1 is not a whole number >= 0"),
        (GOOD.replace("size: 10", "size: 1.5"), r"size: 1.5 is not a whole number"),
        (GOOD.replace("size: 10", "size: true"), r"size: True is not a whole number"),
        (GOOD + "name: [a]\n", r"name: \['a'\] is not text"),
    ],
)
def test_a_bad_field_is_named_in_the_error(text: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=rf"p\.keel is not a valid Keel pointer: {why}"):
        parse_pointer(text, source="p.keel")


def test_a_newer_pointer_version_says_so() -> None:
    with pytest.raises(InvalidInput, match=r"not a Keel pointer of version 1 .*keel_pointer: 2"):
        parse_pointer(GOOD.replace("keel_pointer: 1", "keel_pointer: 2"), source="p.keel")


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ('{"digest":"xyz","size":1}', "bad digest"),
        (f'{{"digest":"{DIGEST}","size":-3}}', "bad size"),
        (f'{{"digest":"{DIGEST}","size":"3"}}', "bad size"),
        (f'{{"digest":"{DIGEST}"}}', "bad entry"),
    ],
)
def test_a_manifest_entry_is_checked(entry: str, why: str) -> None:
    data = f'{{"files":{{"a.txt":{entry}}},"kind":"keel.manifest","version":1}}'.encode()
    with pytest.raises(InvalidInput, match=f"{why} for 'a.txt'"):
        decode_manifest(data, DIGEST)


def test_pointer_and_manifest_modules_import_no_pydantic() -> None:
    """``keel data status`` imports these; pydantic alone would cost it ~0.18 s."""
    code = (
        "import sys, keel.data.models, keel.artifacts.models, keel.artifacts.files;"
        "print('pydantic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
