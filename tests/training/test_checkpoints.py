import pytest

from longshort.errors import ChecksumError
from longshort.training.testbed.checkpoints import checkpoint, verify, write_manifest


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
