"""A small byte-level BPE tokenizer trained offline, with the protocol's tags as single tokens.

Digits are split one by one (arithmetic is learnable digit by digit). The pipeline is exactly the
one transformers' ``Qwen2Tokenizer`` builds (NFC, Qwen2's split pattern, byte-level): the models
are ``Qwen2ForCausalLM``, so ``AutoTokenizer`` on a model folder loads that class, which imposes its
own pipeline on the saved vocabulary. A different pipeline here would make training and inference
tokenize the same text differently (``"\n\n"`` as two tokens in training, one at inference, which
is what the first shipped checkpoints were trained with). The tags are added tokens
but *not* special, so decoding keeps them: a server that skips special tokens still returns the
protocol's tags. Chat markers are special and the template is ChatML, as in Qwen2.5.
"""

from __future__ import annotations

from collections.abc import Iterable

from longshort.protocol import ALL_TAGS

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: Qwen2's pre-tokenizer pattern (``\p{N}`` alone: one digit per piece).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """Train and wrap as a ``PreTrainedTokenizerFast`` (save it with ``save_pretrained``)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ALL_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
