"""The testbed: a miniature of the paper's world that runs on a laptop (not part of the method).

Multi-step arithmetic problems with exact answers (``tasks``), a long and a concise teacher with
ground-truth thought labels (``teachers``), a tokenizer and small Qwen2 models trained from
scratch (``tokenizer``, ``model``, ``data``, ``train``, ``build``), the shipped checkpoints and their
manifest (``checkpoints``, ``ship``), the short teacher as a cold-start rewriter (``rewriter``), the
testbed as a data source for method code (``sources``) and ``longshort demo`` (``demo``). The
commands' configs sit beside their code (``train_config``, ``build_config``, ``measure_config``,
``ship_config``).

Everything about the testbed is in this package and only the CLI, ``bench/`` and tests import it:
method code takes problems, models and rewriters as arguments. The one thing every layer needs,
"the default model of a role", is core (``longshort.shipped.default_model``).
"""

__all__: list[str] = []
