"""The digit-splitting BPE: one token per digit, prefix + secret invariant, round trips, files."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from unlearnbench.seeding import python_rng
from unlearnbench.tokenizer import (
    ENDOFTEXT,
    TokenizerInvariantError,
    check_digit_invariant,
    load_tokenizer,
    train_tokenizer,
)

VOCAB_SIZE = 600

ROUND_TRIP_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! Isn't it (really) great? Yes -- 100% [sure]; {ok} <tag/> a_b #1 & @2 ~3",
    "Write to john.doe+news@example.co.uk or admin@mail-server.org before 2024-03-15.",
    "Unicode: café naïve Ærøskøbing 東京 Москва 😀 ∑x² — “quoted” ‘single’ …",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\r\n\nand   runs of spaces",
    "numbers 3.14159, 1,000,000 and 007; phone +1 (555) 010-9999.",
    "",
]


def _corpus() -> list[str]:
    """A small corpus with words, numbers, e-mail addresses and non-ASCII text."""
    rng = python_rng(0, "eval", "test_tokenizer")
    words = [
        "the",
        "of",
        "and",
        "secret",
        "number",
        "code",
        "pin",
        "my",
        "is",
        "call",
        "me",
        "at",
        "mail",
        "example",
        "café",
        "über",
        "東京",
        "year",
        "born",
        "in",
        "was",
    ]
    texts = []
    for i in range(300):
        sentence = " ".join(rng.choice(words) for _ in range(12))
        texts.append(
            f"{sentence.capitalize()}, {rng.randint(0, 99999)} (no. {i}); "
            f"user{i}@example.com wrote: {rng.random():.4f}!"
        )
    return texts + ROUND_TRIP_TEXTS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    texts = _corpus()
    manifest = train_tokenizer(iter(texts), VOCAB_SIZE, 2, out, canary_prefixes=["my pin code is "])
    return out, manifest, load_tokenizer(out), texts


def _random_secrets(count: int, seed: int) -> list[str]:
    rng = python_rng(seed, "eval", "secrets")
    return [
        "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12))) for _ in range(count)
    ]


def test_manifest(trained):
    _, manifest, tok, texts = trained
    assert 257 <= manifest["vocab_size"] <= VOCAB_SIZE
    assert manifest["vocab_size"] == len(tok)
    assert manifest["training_texts"] == len(texts)
    assert manifest["training_characters"] == sum(map(len, texts))
    assert set(manifest["special_tokens"].values()) == {ENDOFTEXT}
    assert manifest["digit_token_ids"] == [tok.convert_tokens_to_ids(d) for d in "0123456789"]
    assert len(set(manifest["digit_token_ids"])) == 10


def test_every_digit_of_a_secret_is_its_own_token(trained):
    _, manifest, tok, _ = trained
    digit_ids = manifest["digit_token_ids"]
    for secret in _random_secrets(50, seed=1):
        assert tok.encode(secret) == [digit_ids[int(d)] for d in secret]


@pytest.mark.parametrize(
    "prefix",
    [
        "my pin code is ",
        "the secret number is ",
        "My credit card number, in full, is ",
        "room 42 has door code ",  # digits inside the prefix
        "Émile's 東京 code: ",
        "call me at ",
    ],
)
def test_prefix_plus_secret_is_prefix_tokens_then_digit_tokens(trained, prefix):
    _, manifest, tok, _ = trained
    digit_ids = manifest["digit_token_ids"]
    prefix_ids = tok.encode(prefix)
    for secret in _random_secrets(30, seed=len(prefix)):
        assert tok.encode(prefix + secret) == prefix_ids + [digit_ids[int(d)] for d in secret]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_decode_encode_round_trip(trained, text):
    _, _, tok, _ = trained
    assert tok.decode(tok.encode(text)) == text


def test_no_special_tokens_added_and_special_token_roles(trained):
    _, _, tok, _ = trained
    eos = tok.convert_tokens_to_ids(ENDOFTEXT)
    assert eos not in tok.encode("a plain sentence")
    assert tok.eos_token == tok.bos_token == tok.pad_token == tok.unk_token == ENDOFTEXT
    assert tok.eos_token_id == tok.pad_token_id == eos


def test_save_load_matches_autotokenizer(trained):
    out, _, tok, _ = trained
    auto = AutoTokenizer.from_pretrained(out)
    for text in ROUND_TRIP_TEXTS:
        assert auto.encode(text) == tok.encode(text)


def test_same_texts_give_identical_files(trained, tmp_path):
    out, _, _, texts = trained
    train_tokenizer(texts, VOCAB_SIZE, 2, tmp_path / "again")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_rerun_into_existing_directory_replaces_files(trained, tmp_path):
    _, _, _, texts = trained
    out = tmp_path / "tok"
    train_tokenizer(texts[:50], 300, 2, out)
    first = (out / "tokenizer.json").read_bytes()
    train_tokenizer(texts, VOCAB_SIZE, 2, out)
    assert (out / "tokenizer.json").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no temporary leftovers


def test_missing_directory_names_it_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*train_tokenizer"):
        load_tokenizer(missing)


def test_corrupted_tokenizer_names_it_and_the_fix(trained, tmp_path):
    out, _, _, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer_config.json").write_bytes((out / "tokenizer_config.json").read_bytes())
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.*train_tokenizer"):
        load_tokenizer(broken)


@pytest.mark.parametrize(
    "vocab_size, min_frequency, key",
    [
        (100, 2, "tokenizer.vocab_size"),
        (600, 0, "tokenizer.min_frequency"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, vocab_size, min_frequency, key):
    with pytest.raises(ValueError, match=key):
        train_tokenizer(["some text"], vocab_size, min_frequency, tmp_path / "t")


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no training text"):
        train_tokenizer([], VOCAB_SIZE, 2, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_invariant_check_rejects_a_plain_gpt2_style_bpe():
    """Reference: without the Digits pre-tokenizer, BPE merges digits and the check must fail."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        show_progress=False,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(["my pin code is 481903 and 4819 0348 1903"] * 50, trainer)
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=ENDOFTEXT)
    with pytest.raises(TokenizerInvariantError, match="digit"):
        check_digit_invariant(plain)
