"""The architectures `cxr run --model` and `cxr compare --models` offer, named apart from
models/builders.py (which builds them) so that the CLI lists them without importing
TensorFlow; builders_test checks that builders.py builds exactly these."""

BASELINE_CNN = "baseline_cnn"
# ImageNet backbones under the project's head (builders.BACKBONES).
TRANSFER_MODELS = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_b0", "resnet50")
MODEL_NAMES = (BASELINE_CNN,) + TRANSFER_MODELS
