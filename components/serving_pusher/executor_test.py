import os

import pytest
import tensorflow as tf

from components.serving_pusher import executor


def _saved_model(root) -> str:
    model = root / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(b"w" * 1000)
    return str(model)


def test_version_is_newer_than_every_existing_one(tmp_path):
    (tmp_path / "9999999999").mkdir()
    (tmp_path / ".staging-5").mkdir()
    assert executor.next_version(str(tmp_path)) == "10000000000"
    assert int(executor.next_version(str(tmp_path / "empty"))) > 1_700_000_000


def test_a_reader_sees_no_version_until_it_is_complete(tmp_path, monkeypatch):
    base = tmp_path / "serving" / "cxr"
    base.mkdir(parents=True)
    (base / "100").mkdir()
    seen_during_copy = []
    copy_dir = executor.io_utils.copy_dir

    def watching_copy(source, destination, **kwargs):
        copy_dir(source, destination, **kwargs)
        seen_during_copy.append(sorted(os.listdir(base)))

    monkeypatch.setattr(executor.io_utils, "copy_dir", watching_copy)
    path = executor.publish(_saved_model(tmp_path), str(base), "200")

    assert seen_during_copy == [[".staging-200", "100"]]
    assert path == str(base / "200")
    assert sorted(os.listdir(base)) == ["100", "200"]
    assert (base / "200" / "saved_model.pb").read_bytes() == b"graph"
    assert (base / "200" / "variables" / "variables.data-00000-of-00001").stat().st_size == 1000


def test_a_failed_push_leaves_the_serving_versions_as_they_were(tmp_path):
    base = tmp_path / "serving"
    (base / "100").mkdir(parents=True)
    (base / "100" / "saved_model.pb").write_bytes(b"old")
    broken_card = tmp_path / "card-without-json"
    broken_card.mkdir()
    with pytest.raises(tf.errors.NotFoundError):
        executor.publish(_saved_model(tmp_path), str(base), "200", str(broken_card))
    assert sorted(os.listdir(base)) == ["100"]
    assert (base / "100" / "saved_model.pb").read_bytes() == b"old"
