"""The Grad-CAM tests' trained model, shared with explain/'s tests."""
from explain.conftest import trained_baseline  # noqa: F401
