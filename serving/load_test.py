"""`cxr serve` under concurrent load, small enough for every test run (the long run is
`python -m bench.serving_load`, docs/benchmarks.md): 16 clients over gRPC and over REST,
good and undecodable inputs mixed, every answer checked."""
import glob
import os
import time

import pytest

from bench import serving_load
from conftest import SAMPLE_DIR
from serving import server

SPEC = serving_load.LoadSpec(clients=16, requests=96, max_batch=8, bad_fraction=0.25)


@pytest.fixture(scope="module")
def loaded(pushed_model_base):
    paths = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:12]
    good = [open(path, "rb").read() for path in paths]
    running = server.start_server(pushed_model_base, port=0, rest_port=0)
    expected = serving_load.expected_outputs(running.servable.version_dir, good)
    yield running, good, serving_load.bad_inputs(good[0]), expected
    running.stop()


@pytest.mark.parametrize("api", ["grpc", "rest"])
def test_no_answer_is_lost_or_wrong_under_concurrent_load(loaded, api):
    running, good, bad, expected = loaded
    model_name = running.servable.model_name
    make_sender = {
        "grpc": lambda: serving_load.GrpcSender(f"{server.LOOPBACK}:{running.grpc_port}",
                                                model_name),
        "rest": lambda: serving_load.RestSender(server.LOOPBACK, running.rest_port, model_name),
    }[api]
    started = time.monotonic()
    result = serving_load.run_load(make_sender, SPEC, good, bad, expected)
    print(f"{api}: {result['requests']} requests ({result['images']} images) in "
          f"{time.monotonic() - started:.1f} s, p50 {result['p50_ms']:.0f} ms, p99 "
          f"{result['p99_ms']:.0f} ms")
    assert result["problems"] == []
    assert (result["answered"], result["lost"], result["wrong"]) == (SPEC.requests, 0, 0)
    assert result["requests_with_undecodable_inputs"] >= 10  # the refusals were exercised


def test_the_check_catches_wrong_answers():
    """The load test's judge is not blind: a wrong probability, an unnamed bad input and an
    answered bad request are each reported."""
    import numpy as np

    expected = [{"probabilities": np.array([0.2, 0.3, 0.5])}]
    good = [(False, 0)]
    right = {"probabilities": [[0.2, 0.3, 0.5]]}
    assert serving_load.check(good, True, right, expected) == ""
    assert "off by" in serving_load.check(good, True, {"probabilities": [[0.5, 0.3, 0.2]]},
                                          expected)
    mixed = [(False, 0), (True, 1)]
    assert serving_load.check(mixed, False, ("INVALID_ARGUMENT", "image_bytes[1]: bad"),
                              expected) == ""
    assert serving_load.check(mixed, False, ("INVALID_ARGUMENT", "image_bytes[0]: bad"),
                              expected).startswith("expected INVALID_ARGUMENT naming [1]")
    assert "yet the request was answered" in serving_load.check(mixed, True, right, expected)
