"""``load_agents``: one call builds a pair from names (shipped models, shipped pairs, folders, hub ids, servers)."""

import pytest

import longshort.agents.loading as loading
from longshort.agents import load_agents
from longshort.shipped import assets_dir, default_model, shipped_pair


@pytest.fixture
def recorded(monkeypatch):
    """load_backend records the model each role asked for instead of loading it."""
    from longshort.agents import ScriptedBackend

    asked = []

    def fake(kind, model, **kwargs):
        asked.append((kind, str(model)))
        return ScriptedBackend([])

    monkeypatch.setattr(loading, "load_backend", fake)
    return asked


def test_nothing_is_the_shipped_testbed_models(recorded):
    long, short = load_agents()
    assert recorded == [("hf", str(default_model("long"))), ("hf", str(default_model("short")))]
    assert (long.role, short.role) == ("long", "short")


@pytest.mark.parametrize("name", ["longshort-sft", "longshort-rl"])
def test_a_shipped_pair_by_name_is_its_two_adapters(recorded, name):
    pair = shipped_pair(name)
    if pair is None:
        pytest.skip(f"no shipped {name} pair")
    load_agents(name)
    assert recorded == [("hf", str(pair[0])), ("hf", str(pair[1]))]
    assert all(p.is_relative_to(assets_dir() / "sft") for p in pair)


def test_the_rl_pair_reuses_the_cold_start_long_adapter():
    rl, sft = shipped_pair("longshort-rl"), shipped_pair("longshort-sft")
    if rl is None or sft is None:
        pytest.skip("no shipped longshort-rl pair")
    assert rl[0] == sft[0] and rl[1] != sft[1]


def test_an_unknown_pair_name_fails_fast_and_offline(recorded):
    with pytest.raises(ValueError, match="no shipped pair named 'longshort-nope'; shipped: longshort-sft"):
        load_agents("longshort-nope")
    assert recorded == []


def test_folders_hub_ids_and_servers_pass_through(recorded, tmp_path):
    folder = tmp_path / "longshort-sft"  # a local folder wins over the shipped pair of that name
    folder.mkdir()
    load_agents(folder)
    load_agents("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct")
    load_agents("longshort-rl", backend="openai", base_url="http://127.0.0.1:1/v1")  # a served model's name
    assert recorded == [
        ("hf", str(folder)),  # one model plays both roles on one backend
        ("hf", "Qwen/Qwen2.5-7B-Instruct"),
        ("hf", "Qwen/Qwen2.5-1.5B-Instruct"),
        ("openai", "longshort-rl"),
    ]


def test_the_shipped_rl_pair_solves_a_testbed_problem():
    """Real loading: each adapter merged on its shipped base, the stacked one on the merged SFT adapter."""
    from longshort.graphs import build_reasoner, episode_from_state
    from longshort.testbed.tasks import generate_problems

    if shipped_pair("longshort-rl") is None:
        pytest.skip("no shipped longshort-rl pair")
    long, short = load_agents("longshort-rl")
    problem = generate_problems("test", 1, seed=3)[0]
    episode = episode_from_state(build_reasoner(long, short).invoke({"question": problem.question}))
    assert episode.status == "answered" and episode.tokens.long > 0 and episode.tokens.short > 0


# ---------------------------------------------------------------- testbed checkpoints passed by path


@pytest.fixture
def copied_base(tmp_path):
    """A copy of the shipped base somewhere else, as `--long-model COPY/base` passes it."""
    import shutil

    if not (assets_dir() / "base" / "train_info.json").is_file():
        pytest.skip("the package ships without checkpoints")
    return shutil.copytree(assets_dir() / "base", tmp_path / "copy" / "base")


def _flip_a_weight(path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the tensor data: safetensors still loads it, silently wrong
    path.write_bytes(bytes(data))


def test_an_intact_copy_of_a_shipped_checkpoint_loads(copied_base):
    backend = loading.load_backend("hf", copied_base, device="cpu")
    try:
        assert backend.max_context and backend.tokenizer is not None
    finally:
        backend.close()


def test_a_corrupted_copy_of_a_shipped_checkpoint_is_refused_on_every_load_path(copied_base, tmp_path):
    import json

    from longshort.errors import ChecksumError

    _flip_a_weight(copied_base / "model.safetensors")
    weights = str(copied_base / "model.safetensors")
    for load in (
        lambda: loading.load_backend("hf", copied_base, device="cpu"),
        lambda: loading.load_backend("hf-process", copied_base, device="cpu"),
        lambda: load_agents(copied_base),
        lambda: loading.load_trained(copied_base),
    ):
        with pytest.raises(ChecksumError, match="model.safetensors") as info:
            load()
        assert info.value.path == weights
    adapter = tmp_path / "adapter"  # an ordinary LoRA adapter whose base is the corrupted copy
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(copied_base)}))
    with pytest.raises(ChecksumError, match="model.safetensors"):
        loading.load_trained(adapter)
    loading.load_backend("openai", copied_base, base_url="http://127.0.0.1:1/v1")  # a served name: nothing local


def test_a_pair_name_with_a_short_model_is_ambiguous(recorded):
    if shipped_pair("longshort-sft") is None:
        pytest.skip("no shipped longshort-sft pair")
    with pytest.raises(ValueError, match="is a shipped pair \\(both agents\\)"):
        load_agents("longshort-sft", "Qwen/Qwen2.5-1.5B-Instruct")
    assert recorded == []
