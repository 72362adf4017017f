import pytest

from longshort.errors import ChecksumError
from longshort.testbed.checkpoints import checkpoint, verify, write_manifest


@pytest.fixture
def assets(tmp_path):
    for name in ("reasoner", "base"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights of " + name.encode())
    write_manifest(tmp_path, command="longshort testbed build", seed=0, metrics={"long_only_accuracy": 1.0})
    return tmp_path


def test_manifest_round_trip(assets):
    manifest = verify(assets)
    assert set(manifest.files) == {"reasoner/model.safetensors", "base/model.safetensors"}
    assert checkpoint("base", assets) == assets / "base"


def test_corrupted_file_is_named(assets):
    (assets / "base" / "model.safetensors").write_bytes(b"flipped")
    with pytest.raises(ChecksumError, match="base/model.safetensors") as info:
        checkpoint("reasoner", assets)
    assert info.value.path.endswith("base/model.safetensors")


def test_missing_file_and_manifest(assets, tmp_path_factory):
    (assets / "reasoner" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="reasoner/model.safetensors"):
        verify(assets)
    with pytest.raises(FileNotFoundError, match="manifest"):
        verify(tmp_path_factory.mktemp("empty"))


def test_unknown_checkpoint(assets):
    with pytest.raises(ValueError, match="unknown testbed checkpoint"):
        checkpoint("teacher", assets)


# --- shipped cold-start SFT pairs: `longshort testbed ship-sft` and loading them back ---------------------------

NAME = "longshort-sft"


def _ship(assets, long, short, *extra: str):
    from typer.testing import CliRunner

    from longshort.cli import app

    args = ["testbed", "ship-sft", "--long", str(long), "--short", str(short), "--assets", str(assets), *extra]
    return CliRunner().invoke(app, args)


def test_ship_sft_copies_the_adapters_and_extends_the_manifest(sft_assets, adapters, tmp_path):
    import json

    from safetensors import safe_open

    from longshort.testbed.checkpoints import shipped_pairs

    demo = {"n": 2, "seed": 0, "rows": [{"system": NAME, "accuracy": 0.5}, {"system": "long-only", "accuracy": 1.0}]}
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    result = _ship(sft_assets, adapters / "long", adapters / "short", "--metrics", str(tmp_path / "demo.json"))
    assert result.exit_code == 0, result.output
    assert "shipped longshort-sft" in result.output
    for role, base in (("long", "reasoner"), ("short", "base")):
        shipped = sft_assets / "sft" / NAME / role
        assert {p.name for p in shipped.iterdir()} == {
            "adapter_model.safetensors",
            "adapter_config.json",
            "sft_info.json",
        }
        config = json.loads((shipped / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == base and config["peft_type"] == "LORA"
        with safe_open(str(shipped / "adapter_model.safetensors"), "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118
        assert (shipped / "adapter_model.safetensors").stat().st_size < (
            adapters / role / "adapter_model.safetensors"
        ).stat().st_size * 0.6
    manifest = verify(sft_assets)
    assert (manifest.command, manifest.seed, manifest.metrics) == (
        "longshort testbed build --seed 3",
        3,
        {"long_only_accuracy": 0.9},
    )
    assert {f"sft/{NAME}/long/adapter_model.safetensors", "reasoner/model.safetensors"} <= set(manifest.files)
    pair = manifest.sft[NAME]
    assert (pair.long.base, pair.short.base) == ("reasoner", "base")
    assert pair.long.base_sha256 == manifest.files["reasoner/model.safetensors"]
    assert (
        pair.long.info["steps"] == 1 and pair.long.info["lora_r"] == 4 and pair.long.info["source_dtype"] == "float32"
    )
    assert pair.metrics["row"] == {"system": NAME, "accuracy": 0.5} and pair.metrics["eval_n"] == 2
    assert "ship-sft" in pair.command
    assert shipped_pairs(sft_assets) == {
        NAME: (sft_assets / "sft" / NAME / "long", sft_assets / "sft" / NAME / "short")
    }


def test_shipping_again_replaces_the_pair_and_keeps_the_others(sft_assets, adapters):
    from longshort.testbed.checkpoints import shipped_pairs

    checkpoint_files = len(verify(sft_assets).files)
    for name in (NAME, "longshort-sft-random", NAME):
        assert _ship(sft_assets, adapters / "long", adapters / "short", "--name", name).exit_code == 0
    assert set(shipped_pairs(sft_assets)) == {NAME, "longshort-sft-random"}
    assert sorted(p.name for p in (sft_assets / "sft").iterdir()) == ["longshort-sft", "longshort-sft-random"]
    assert len(verify(sft_assets).files) == checkpoint_files + 2 * 2 * 3  # two pairs, two agents, three files


def test_no_shipped_pairs_without_an_sft_entry(sft_assets):
    import json

    from longshort.testbed.checkpoints import shipped_pairs

    assert shipped_pairs(sft_assets) == {}
    assert "sft" not in json.loads((sft_assets / "manifest.json").read_text())  # old manifests keep their shape


def test_corrupted_shipped_adapter_is_named(sft_assets, adapters):
    from longshort.agents.loading import load_trained
    from longshort.testbed.checkpoints import shipped_pairs

    assert _ship(sft_assets, adapters / "long", adapters / "short").exit_code == 0
    bad = sft_assets / "sft" / NAME / "short" / "adapter_model.safetensors"
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"sft/{NAME}/short/adapter_model.safetensors") as info:
        shipped_pairs(sft_assets)
    assert info.value.path == str(bad)
    with pytest.raises(ChecksumError, match="short/adapter_model.safetensors"):
        load_trained(sft_assets / "sft" / NAME / "long")  # loading any shipped adapter verifies the folder


def test_shipped_adapter_loads_like_the_original(sft_assets, adapters, tiny_checkpoints):
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from longshort.agents.loading import load_trained, tokenizer_path
    from longshort.testbed.checkpoints import shipped_base

    assert _ship(sft_assets, adapters / "long", adapters / "short").exit_code == 0
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    for role, base in (("long", "reasoner"), ("short", "base")):
        shipped = sft_assets / "sft" / NAME / role
        assert shipped_base(shipped) == sft_assets / base and tokenizer_path(shipped) == sft_assets / base
        base_model = AutoModelForCausalLM.from_pretrained(tiny_checkpoints / base, dtype="float32")
        with torch.no_grad():
            plain = base_model(ids).logits
            original = PeftModel.from_pretrained(base_model, adapters / role).merge_and_unload()(ids).logits
            loaded = load_trained(shipped, dtype="float32")(ids).logits
        assert (original - plain).abs().max() > 0.05  # the adapter changes the model...
        assert torch.allclose(loaded, original, atol=5e-3)  # ...and ships with only fp16 rounding
    # ordinary adapters and full models load as before; a shipped adapter moved out of its assets is a clear error
    assert shipped_base(adapters / "long") is None and shipped_base(tiny_checkpoints / "reasoner") is None
    assert tokenizer_path(adapters / "long") == adapters / "long"
    moved = shutil.copytree(sft_assets / "sft" / NAME / "long", sft_assets.parent / "elsewhere" / "long")
    with pytest.raises(ValueError, match="only inside a testbed assets folder"):
        load_trained(moved)


def test_ship_refuses_over_the_size_cap(sft_assets, adapters):
    from longshort.testbed.checkpoints import SIZE_LIMIT_BYTES

    used = sum(p.stat().st_size for p in sft_assets.rglob("*") if p.is_file())
    with open(sft_assets / "base" / "padding.bin", "wb") as f:  # sparse: room for the manifest, not the adapters
        f.truncate(SIZE_LIMIT_BYTES - used - 20_000)
    write_manifest(sft_assets, command="longshort testbed build", seed=0, metrics={})
    before = (sft_assets / "manifest.json").read_text()
    result = _ship(sft_assets, adapters / "long", adapters / "short")
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "over the 20.00 MB cap" in out and "already there" in out and "long 0.0" in out
    assert (sft_assets / "manifest.json").read_text() == before and not (sft_assets / "sft").exists()


def _edit_info(src, dst, **changes):
    import json
    import shutil

    shutil.copytree(src, dst)
    info = json.loads((dst / "sft_info.json").read_text())
    (dst / "sft_info.json").write_text(json.dumps({**info, **changes}))
    return dst


@pytest.mark.parametrize(
    "case, message",
    [
        ("swapped", "says it is the 'short' agent, not 'long'"),
        ("short-on-reasoner", "must be trained from the shipped base, but its base .* is the shipped reasoner"),
        (
            "unknown-base",
            "must be trained from the shipped reasoner, but its sft_info.json records base sha256 "
            "000000000000…, which is no shipped checkpoint",
        ),
        ("full-model", "is not a LoRA adapter \\(it holds a full model"),
        ("no-info", "has no sft_info.json"),
    ],
)
def test_ship_refuses_a_wrong_adapter(sft_assets, adapters, tmp_path, case, message):
    long, short = adapters / "long", adapters / "short"
    if case == "swapped":
        long, short = short, long
    elif case == "short-on-reasoner":
        short = _edit_info(long, tmp_path / "short", agent="short")
    elif case == "unknown-base":
        long = _edit_info(long, tmp_path / "long", base_sha256="0" * 64)
    elif case == "full-model":
        long = sft_assets / "reasoner"
    else:
        long = _edit_info(long, tmp_path / "long")
        (long / "sft_info.json").unlink()
    before = (sft_assets / "manifest.json").read_text()
    result = _ship(sft_assets, long, short)
    assert result.exit_code == 2
    import re

    assert re.search(message, " ".join(result.output.split())), result.output
    assert (sft_assets / "manifest.json").read_text() == before and not (sft_assets / "sft").exists()


def test_ship_refuses_corrupted_assets_and_stale_pairs(sft_assets, adapters):
    from longshort.testbed.checkpoints import Manifest, save_manifest, sha256_file, shipped_pairs
    from longshort.testbed.ship import ship_sft

    assert _ship(sft_assets, adapters / "long", adapters / "short").exit_code == 0
    with open(sft_assets / "reasoner" / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(ChecksumError, match="reasoner/config.json"):  # never re-blesses a corrupted file
        ship_sft(adapters / "long", adapters / "short", name="other", assets=sft_assets)
    assert _ship(sft_assets, adapters / "long", adapters / "short", "--name", "other").exit_code == 2
    # a rebuilt reasoner (manifest rewritten for it) makes the shipped long adapter stale
    manifest = Manifest.model_validate_json((sft_assets / "manifest.json").read_text())
    (sft_assets / "reasoner" / "model.safetensors").write_bytes(b"retrained")
    files = {**manifest.files, "reasoner/config.json": sha256_file(sft_assets / "reasoner" / "config.json")}
    files["reasoner/model.safetensors"] = sha256_file(sft_assets / "reasoner" / "model.safetensors")
    save_manifest(sft_assets, manifest.model_copy(update={"files": files}))
    with pytest.raises(ValueError, match="long adapter was shipped against another reasoner"):
        shipped_pairs(sft_assets)


# --- a testbed checkpoint loaded by path is verified wherever it lives (issue 17, case 11) ---------------------


def test_solve_refuses_a_corrupted_copy_of_the_shipped_base(tmp_path):
    import shutil

    from typer.testing import CliRunner

    from longshort.cli import app
    from longshort.shipped import assets_dir

    if not (assets_dir() / "base" / "train_info.json").is_file():
        pytest.skip("the package ships without checkpoints")
    copy = shutil.copytree(assets_dir() / "base", tmp_path / "copy" / "base")
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.safetensors").write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["solve", "What is 2 + 3?", "--long-model", str(copy), "--json"])
    assert result.exit_code == 2, result.output
    assert "corrupted" in result.output and str(copy / "model.safetensors") in " ".join(result.output.split())


def test_a_trained_testbed_model_records_its_files_and_a_copy_is_verified(tiny_checkpoints, tmp_path):
    import json
    import shutil

    from longshort.shipped import verify_checkpoint_dir
    from longshort.testbed.train import _file_digests

    run = shutil.copytree(tiny_checkpoints / "base", tmp_path / "run" / "base")
    (run / "config.yaml").write_text("model: base\n")
    info = {"config": {"model": "base"}, "files": _file_digests(run)}
    (run / "train_info.json").write_text(json.dumps(info))
    assert "model.safetensors" in info["files"] and "config.yaml" not in info["files"]
    copy = shutil.copytree(run, tmp_path / "elsewhere" / "base")
    verify_checkpoint_dir(copy)
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + " ")
    with pytest.raises(ChecksumError, match="tokenizer_config.json") as caught:
        verify_checkpoint_dir(copy)
    assert caught.value.path == str(copy / "tokenizer_config.json")
