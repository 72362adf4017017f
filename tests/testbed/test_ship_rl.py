"""`longshort testbed ship-rl`: an RL run's last adapters ship stacked on the cold-start pair they trained on."""

import json

import pytest
import torch
from typer.testing import CliRunner

from longshort.cli import app
from longshort.testbed.checkpoints import shipped_pairs
from longshort.testbed.ship import ship_sft

SFT, RL = "longshort-sft", "longshort-rl"
IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])


def _rl_run(root, assets, *, short_model=None):
    """An RL output folder as `train rl --schedule S1` leaves it: rounds.json, config.yaml, rounds/S1/final/."""
    from peft import LoraConfig, get_peft_model

    from longshort.agents.loading import load_trained

    merged = load_trained(assets / "sft" / SFT / "short", dtype="float32")  # what the run's sft/short holds
    config = LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(merged, config).save_pretrained(root / "rounds" / "S1" / "final")
    rows = [
        {"round": "SFT r0", "agent": None, "accuracy": 0.5, "mean_tokens": 250.0},
        {"round": "S1", "agent": "short", "accuracy": 0.8, "mean_tokens": 270.0, "final": "elsewhere/S1/final"},
    ]
    (root / "rounds.json").write_text(json.dumps({"command": "longshort train rl --schedule S1", "rounds": rows}))
    (root / "config.yaml").write_text(f"schedule: S1\nlong_model: null\nshort_model: {short_model or 'null'}\n")
    return root


def _ship_rl(assets, run, *extra):
    return CliRunner().invoke(app, ["testbed", "ship-rl", "--run", str(run), "--assets", str(assets), *extra])


@pytest.fixture
def rl_assets(sft_assets, adapters, tmp_path):
    ship_sft(adapters / "long", adapters / "short", assets=sft_assets)
    return sft_assets, _rl_run(tmp_path / "run", sft_assets)


def test_ship_rl_stacks_the_trained_agent_and_references_the_untrained_one(rl_assets):
    from peft import PeftModel

    from longshort.agents.loading import load_trained, tokenizer_path
    from longshort.testbed.checkpoints import verify

    assets, run = rl_assets
    result = _ship_rl(assets, run)
    assert result.exit_code == 0, result.output
    pairs = shipped_pairs(assets)
    assert pairs[RL] == (assets / "sft" / SFT / "long", assets / "sft" / RL / "short")  # long: S1 did not train it
    assert not (assets / "sft" / RL / "long").exists()
    shipped = assets / "sft" / RL / "short"
    assert {p.name for p in shipped.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "rl_info.json"}
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] == f"sft/{SFT}/short"
    assert tokenizer_path(shipped) == assets / "base"
    entry = verify(assets).sft[RL]
    assert entry.long.path == f"sft/{SFT}/long" and entry.short.base == f"sft/{SFT}/short"
    assert [r["round"] for r in entry.metrics["rounds"]] == ["SFT r0", "S1"] and entry.metrics["row"]["system"] == RL
    # it loads as the SFT adapter merged, then the RL adapter merged on top (fp16 rounding only)
    sft = load_trained(assets / "sft" / SFT / "short", dtype="float32")
    with torch.no_grad():
        before = sft(IDS).logits
        original = PeftModel.from_pretrained(sft, run / "rounds" / "S1" / "final").merge_and_unload()(IDS).logits
        loaded = load_trained(shipped, dtype="float32")(IDS).logits
    assert (original - before).abs().max() > 0.05
    assert torch.allclose(loaded, original, atol=5e-3)


def test_reshipping_the_cold_start_pair_makes_the_rl_pair_stale(rl_assets, adapters, tmp_path):
    import shutil

    assets, run = rl_assets
    assert _ship_rl(assets, run).exit_code == 0
    other = shutil.copytree(adapters / "short", tmp_path / "other-short")
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "adapter_model.safetensors")
    save_file({k: v * 2 for k, v in weights.items()}, other / "adapter_model.safetensors")
    ship_sft(adapters / "long", other, assets=assets)
    with pytest.raises(ValueError, match=f"short adapter was shipped against another sft/{SFT}/short"):
        shipped_pairs(assets)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-rounds", "no rounds.json"),
        ("other-start", "its short agent started from /somewhere/short, not from the shipped 'longshort-sft' pair"),
        ("unknown-on", "--on 'nope': no such shipped pair"),
        ("same-name", "needs a name of its own"),
        ("nothing-trained", "no round has finished yet"),
    ],
)
def test_ship_rl_refuses_what_it_cannot_ship(rl_assets, tmp_path, case, message):
    assets, run = rl_assets
    extra: tuple[str, ...] = ()
    if case == "no-rounds":
        (run / "rounds.json").unlink()
    elif case == "other-start":
        (run / "config.yaml").write_text("short_model: /somewhere/short\n")
    elif case == "unknown-on":
        extra = ("--on", "nope")
    elif case == "same-name":
        extra = ("--name", SFT)
    else:
        record = json.loads((run / "rounds.json").read_text())
        (run / "rounds.json").write_text(json.dumps({**record, "rounds": record["rounds"][:1]}))
    before = (assets / "manifest.json").read_text()
    result = _ship_rl(assets, run, *extra)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert (assets / "manifest.json").read_text() == before and not (assets / "sft" / RL).exists()
