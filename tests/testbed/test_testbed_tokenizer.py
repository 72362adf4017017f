"""The testbed tokenizer tokenizes the same way in training (as built) and at inference (from a model folder)."""

from transformers import AutoTokenizer

from longshort.testbed.model import make_model
from longshort.testbed.tasks import generate_problems
from longshort.testbed.teachers import reasoner_example
from longshort.testbed.tokenizer import train_tokenizer


def test_a_model_folder_loads_the_tokenizer_it_was_trained_with(tmp_path):
    problems = generate_problems("train", 30, seed=0)
    examples = [reasoner_example(p) for p in problems]
    built = train_tokenizer([m[-1]["content"] + "\n\n" + c for m, c in examples], vocab_size=600)
    model = make_model(built, hidden_size=16, layers=1, heads=2, kv_heads=2)
    model.save_pretrained(tmp_path)  # config.json says qwen2: AutoTokenizer picks Qwen2Tokenizer
    built.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for messages, completion in examples[:5]:
        text = built.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + completion
        assert "\n\n" in text
        assert loaded.encode(text) == built.encode(text)
    digits = built.encode("12345", add_special_tokens=False)
    assert [built.decode([t]) for t in digits] == list("12345")  # one digit per token
