"""``longshort.shipped``: the manifest check names the file it could not use, and copies of shipped checkpoints."""

import json
import shutil

import pytest

from longshort.errors import ChecksumError
from longshort.shipped import assets_dir, sha256_file, verify_checkpoint_dir, verify_files


@pytest.fixture
def assets(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model.safetensors").write_bytes(b"weights")
    files = {"base/model.safetensors": sha256_file(tmp_path / "base" / "model.safetensors")}
    (tmp_path / "manifest.json").write_text(json.dumps({"files": files}))
    return tmp_path


def test_a_good_manifest_verifies(assets):
    assert verify_files(assets)["files"] == {"base/model.safetensors": sha256_file(assets / "base/model.safetensors")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"files": {"base/model.safetensors": ', "not valid JSON"),  # a torn write
        ("\xff\xfe", "not valid JSON"),  # not even text
        ("[1, 2]", "malformed"),
        ('{"files": ["base/model.safetensors"]}', "malformed"),
    ],
)
def test_a_manifest_that_does_not_parse_is_named(assets, text, message):
    (assets / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ChecksumError, match=message) as info:
        verify_files(assets)
    assert str(assets / "manifest.json") in str(info.value) and info.value.path == str(assets / "manifest.json")


def _copy_of_shipped(tmp_path, name: str = "base"):
    if not (assets_dir() / name / "train_info.json").is_file():
        pytest.skip("the package ships without checkpoints")
    return shutil.copytree(assets_dir() / name, tmp_path / "copy" / name)


def _flip_byte(path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_copy_of_a_shipped_checkpoint_is_checked_against_the_manifest(tmp_path):
    copy = _copy_of_shipped(tmp_path)
    verify_checkpoint_dir(copy)  # intact: passes
    _flip_byte(copy / "model.safetensors")
    with pytest.raises(ChecksumError, match="model.safetensors") as info:
        verify_checkpoint_dir(copy)
    assert info.value.path == str(copy / "model.safetensors") and "package manifest" in str(info.value)


def test_files_recorded_in_train_info_are_checked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"trained weights")
    (run / "config.json").write_text("{}")
    files = {name: sha256_file(run / name) for name in ("model.safetensors", "config.json")}
    (run / "train_info.json").write_text(json.dumps({"config": {"model": "reasoner"}, "files": files}))
    verify_checkpoint_dir(run)
    (run / "config.json").write_text('{"x": 1}')
    with pytest.raises(ChecksumError, match="config.json") as info:
        verify_checkpoint_dir(run)
    assert str(run / "train_info.json") in str(info.value)
    (run / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        verify_checkpoint_dir(run)


def test_folders_that_are_not_testbed_checkpoints_are_left_alone(tmp_path):
    verify_checkpoint_dir(tmp_path)  # no train_info.json at all
    (tmp_path / "train_info.json").write_text(json.dumps({"steps": 3}))  # someone else's record
    verify_checkpoint_dir(tmp_path)
    (tmp_path / "train_info.json").write_text(json.dumps({"config": {"model": "base"}}))  # an older run: nothing
    verify_checkpoint_dir(tmp_path)  # recorded to check against
    (tmp_path / "train_info.json").write_text('{"config": ')
    with pytest.raises(ChecksumError, match="train_info.json is not valid JSON"):
        verify_checkpoint_dir(tmp_path)
