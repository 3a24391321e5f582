"""CLIP token counting: exact against transformers' CLIPTokenizer built from the shipped HF files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curator.tags.tokens import (
    count_tokens,
    get_tokenizer,
    token_warning,
    vocabulary,
    write_hf_tokenizer_files,
)

DATA = Path(__file__).resolve().parents[1] / "curator" / "data" / "clip_tokenizer"

TEXTS = [
    "1girl, long hair, blue eyes, ganyu \\(genshin impact\\), ^_^, o_o, >_<",
    "A photo of an ohwx WOMAN's face, 8k, (masterpiece:1.2), [lora:xyz:0.8]",
    "café naïve — “quotes” 日本語のテキスト, Ⅻ ² ½ émoji 😀, don't,!'s",
    "tab\there\x07bell  spaces\x1cx\u00a0nbsp",
    "<|endoftext|> x <|startoftext|>",
    "Cafe\u0301 İstanbul ǅ ﬁ",
    "",
    "   ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism 1234567890",
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer(str(DATA / "vocab.json"), str(DATA / "merges.txt"))


@pytest.mark.parametrize("text", TEXTS)
def test_matches_transformers(hf_tokenizer, text: str) -> None:
    assert get_tokenizer().tokenize(text) == hf_tokenizer.tokenize(text)
    assert count_tokens(text) == len(hf_tokenizer(text)["input_ids"]) - 2


def test_matches_transformers_on_real_caption_files(hf_tokenizer) -> None:
    words = ["long hair", "white shirt", "looking at viewer", "blonde hair", "thighhighs", "ohwx", "sks"]
    for n in range(40):
        text = ", ".join(words[(n + i) % len(words)] for i in range(n % 30 + 1))
        assert count_tokens(text) == len(hf_tokenizer.tokenize(text))


def test_shipped_hf_files_match_generated(tmp_path: Path) -> None:
    write_hf_tokenizer_files(tmp_path)
    assert (tmp_path / "merges.txt").read_bytes() == (DATA / "merges.txt").read_bytes()
    assert json.loads((tmp_path / "vocab.json").read_text()) == json.loads((DATA / "vocab.json").read_text())
    vocab, merges = vocabulary()
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407 and len(merges) == 48894
    # "a photo of" is [49406, 320, 1125, 539, 49407] with openai/clip-vit-large-patch14
    assert [vocab["a</w>"], vocab["photo</w>"], vocab["of</w>"]] == [320, 1125, 539]


def test_warnings_at_kohya_limits() -> None:
    assert token_warning(75) is None
    assert "150" in token_warning(76)
    assert "225" in token_warning(151)
    assert "truncated" in token_warning(226)
