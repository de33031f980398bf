"""Defaults of every Grad-CAM entry point: the GradCam component, PipelineConfig,
`cxr gradcam` and the web demo. Apart from the Grad-CAM code, so that `cxr --help` shows
them without importing TensorFlow."""

OVERLAY_ALPHA = 0.4  # weight of the heatmap over the image in the overlays
STEPS = 10  # points of the deletion and insertion curves, one forward pass each
IMAGES_PER_CLASS = 3  # most confident correct predictions shown per true class
# Mistakes explained at most when every mistake is asked for (0: every one). 24 covers
# every mistake of a reasonably trained model on cxr3's 144 test images (about 25) and keeps
# a barely trained one (60 mistakes after one epoch) from tripling the component's time.
MAX_MISCLASSIFIED = 24
