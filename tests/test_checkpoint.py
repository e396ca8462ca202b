import torch

from armor.pipeline.checkpoint import load_if_valid, load_tensors, save_tensors


def test_round_trip_with_metadata(tmp_path):
    path = tmp_path / "block.safetensors"
    save_tensors(path, {"w": torch.arange(6.0).reshape(2, 3)}, {"seconds": 1.5})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3))
    assert meta == {"seconds": 1.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block.safetensors", "block.safetensors.sha256"]


def test_truncated_checkpoint_is_discarded(tmp_path, caplog):
    path = tmp_path / "block.safetensors"
    save_tensors(path, {"w": torch.randn(64, 64)})
    path.write_bytes(path.read_bytes()[:1000])
    assert load_if_valid(path) is None
    assert not path.exists()
    assert "discarding damaged checkpoint" in caplog.text


def test_altered_checkpoint_fails_checksum(tmp_path):
    path = tmp_path / "block.safetensors"
    save_tensors(path, {"w": torch.zeros(8)})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert load_if_valid(path) is None


def test_missing_checkpoint_is_none(tmp_path):
    assert load_if_valid(tmp_path / "nothing.safetensors") is None
