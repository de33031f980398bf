"""Request limits of `cxr serve`, apart from the server so that `cxr --help` can show their
defaults without importing gRPC and TensorFlow."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may hold; a bigger request gets a clear error, not unbounded memory."""
    max_batch_size: int = 64           # inputs (images) per request
    max_request_bytes: int = 64 * 2 ** 20  # the gRPC message or the REST body

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_request_bytes < 1:
            raise ValueError("the batch and request size limits must be positive")
