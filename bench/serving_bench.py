"""Serving latency and throughput of a pushed model: in process, gRPC, ONNX, TFLite.

The SavedModel paths take encoded image bytes and decode inside the graph; the ONNX and
TFLite exports take decoded float images (they have no image ops), so their rows exclude
decoding, and `decode_ms_per_image` says what a caller adds for it.
"""
import os
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from bench.measure import percentile, summarize

BATCH_SIZES = (1, 8, 32)


def version_folder(model_uri: str, serving_dir: str) -> str:
    """The Trainer's SavedModel as version 1 of a model base path (TF Serving's layout).

    The Pusher copies exactly this SavedModel, but only when the Evaluator blessed it; tiny
    or short runs may not be blessed, and their serving cost is the same.
    """
    from pipeline.config import PipelineConfig
    from serving import layout

    version_dir = layout.version_dir(serving_dir, PipelineConfig.serving_model_name, "1")
    os.makedirs(os.path.dirname(version_dir), exist_ok=True)
    os.symlink(layout.find_saved_model(model_uri), version_dir)
    return version_dir


def _cycle(items: Sequence, start: int, size: int) -> list:
    return [items[(start + i) % len(items)] for i in range(size)]


def time_requests(predict: Callable[[Sequence], object], inputs: Sequence, batch_size: int,
                  requests: int, repeats: int, warmup: int = 3) -> Dict[str, object]:
    """Latency of each request (batch_size inputs, cycling through `inputs`), per repeat."""
    for index in range(warmup):
        predict(_cycle(inputs, index * batch_size, batch_size))
    latencies, throughputs = [], []
    for _ in range(repeats):
        start_repeat = time.perf_counter()
        for index in range(requests):
            batch = _cycle(inputs, index * batch_size, batch_size)
            start = time.perf_counter()
            predict(batch)
            latencies.append((time.perf_counter() - start) * 1000)
        throughputs.append(requests * batch_size / (time.perf_counter() - start_repeat))
    return {"batch_size": batch_size, "requests": requests * repeats,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "p50_ms_per_image": percentile(latencies, 50) / batch_size,
            "images_per_second": summarize(throughputs)}


def _backends(version_dir: str, work_dir: str) -> Tuple[Dict[str, tuple], tuple]:
    """name -> (predict function, whether it takes encoded bytes); the gRPC server and client."""
    import tensorflow as tf

    from models import features
    from serving import client, export, layout, server

    signature = tf.saved_model.load(version_dir).signatures[features.SERVING_SIGNATURE]
    running = server.start_server(os.path.dirname(version_dir), port=0)
    grpc_client = client.PredictionClient(f"{server.LOOPBACK}:{running.grpc_port}",
                                          running.servable.model_name,
                                          batch_size=max(BATCH_SIZES))
    model = layout.load_keras_model(version_dir)
    onnx_path = os.path.join(work_dir, "model.onnx")
    tflite_path = os.path.join(work_dir, "model.tflite")
    export.export_onnx(model, onnx_path)
    export.export_tflite(model, tflite_path)
    onnx_predict = export.onnx_predictor(onnx_path)
    tflite_predict = export.tflite_predictor(tflite_path)
    backends = {
        "savedmodel_in_process": (lambda batch: signature(**{
            features.SERVING_INPUT: tf.constant(batch)})[features.PROBABILITIES_OUTPUT].numpy(),
            True),
        "grpc_cxr_serve": (grpc_client.predict, True),
        "onnxruntime": (lambda batch: onnx_predict(np.stack(batch)), False),
        "tflite_float32": (lambda batch: tflite_predict(np.stack(batch)), False),
    }
    return backends, (running, grpc_client)


def run(version_dir: str, images: List[bytes], work_dir: str, requests: int,
        repeats: int) -> Dict[str, object]:
    from serving import export, layout

    os.makedirs(work_dir, exist_ok=True)
    size = export.image_size(layout.load_keras_model(version_dir))
    start = time.perf_counter()
    decoded = list(export.decode_images(images, size))
    decode_ms = (time.perf_counter() - start) * 1000 / len(images)
    backends, (running, grpc_client) = _backends(version_dir, work_dir)
    results = {}
    try:
        for name, (predict, takes_bytes) in backends.items():
            results[name] = {"input": "encoded bytes" if takes_bytes else "decoded float32",
                             "batches": [time_requests(predict, images if takes_bytes
                                                       else decoded, size_, requests, repeats)
                                         for size_ in BATCH_SIZES]}
    finally:
        grpc_client.close()
        running.stop()
    in_process = results["savedmodel_in_process"]["batches"][0]["p50_ms"]
    over_grpc = results["grpc_cxr_serve"]["batches"][0]["p50_ms"]
    return {"image_size": size, "test_images": len(images), "decode_ms_per_image": decode_ms,
            "backends": results, "grpc_overhead_p50_ms_batch1": over_grpc - in_process}
