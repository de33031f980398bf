"""How far a heatmap can be trusted, and where it looks.

- Deletion and insertion curves (Petsiuk et al., 2018, RISE): remove from the image (set to
  black), or add to a blurred copy, the most salient blocks first in equal steps and track
  the probability of the explained class. A faithful map makes the probability fall fast
  on deletion (low AUC) and rise fast on insertion (high AUC). The same curves with a random
  block order are computed as the reference a map has to beat.
- Heatmap mass in a border band (where labels, side markers, rulers and film edges are: a
  shortcut signal) and in an approximate lung field (two fixed ellipses, see lung_field_mask).
- Rank correlation between maps of the trained and of a re-initialised model (Adebayo et
  al., 2018): near 1 means the map does not depend on what the model learned.
"""
import dataclasses
from typing import Callable, Dict

import numpy as np
from scipy import ndimage, stats

BORDER_FRACTION = 0.1
LUNG_FIELD_DEFINITION = (
    "two ellipses, one per lung, centred at 30% and 70% of the width and 45% of the height, "
    "semi-axes 18% of the width and 30% of the height of the model input; this leaves out "
    "the mediastinum, the area below the diaphragm and most of the border band. It is an "
    "approximation of typical framing of a frontal film, not a lung segmentation.")
LUNG_CENTRES_X = (0.30, 0.70)
LUNG_CENTRE_Y = 0.45
LUNG_SEMI_AXES = (0.18, 0.30)
INSERTION_BLUR_SIGMA = 0.05  # of the image side
BLOCK_GRID = 16  # deletion and insertion move blocks of 1/16 of the side (14 px at 224 px)

Predict = Callable[[np.ndarray], np.ndarray]


def border_mask(size: int, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """True for pixels closer to an image edge than `fraction` of the side."""
    band = max(1, int(round(size * fraction)))
    mask = np.ones((size, size), dtype=bool)
    mask[band:size - band, band:size - band] = False
    return mask


def lung_field_mask(size: int) -> np.ndarray:
    """True inside the two ellipses of LUNG_FIELD_DEFINITION."""
    centres = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(centres, centres, indexing="ij")
    a, b = LUNG_SEMI_AXES
    inside = [((x - cx) / a) ** 2 + ((y - LUNG_CENTRE_Y) / b) ** 2 <= 1.0
              for cx in LUNG_CENTRES_X]
    return np.logical_or(*inside)


def mass_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's total mass inside `mask`; NaN for an all-zero map."""
    total = float(heatmap.sum())
    return float(heatmap[mask].sum() / total) if total > 0 else float("nan")


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps pixel by pixel; NaN when either is constant."""
    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def curve_auc(probabilities: np.ndarray) -> float:
    """Area under a curve sampled at equal fractions of the pixels, in [0, 1]."""
    fractions = np.linspace(0.0, 1.0, len(probabilities))
    return float(np.trapz(probabilities, fractions))


@dataclasses.dataclass
class Curves:
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray

    def aucs(self) -> Dict[str, float]:
        return {f"{name}_auc": curve_auc(values)
                for name, values in dataclasses.asdict(self).items()}


def _reveal(start: np.ndarray, source: np.ndarray, order: np.ndarray, steps: int) -> np.ndarray:
    """steps+1 images: `start` with the first k/steps of `order` pixels taken from `source`."""
    size = start.shape[0]
    frames = np.repeat(start[np.newaxis], steps + 1, axis=0).reshape(steps + 1, size * size, -1)
    flat_source = source.reshape(size * size, -1)
    for k in range(1, steps + 1):
        taken = order[:int(round(len(order) * k / steps))]
        frames[k, taken] = flat_source[taken]
    return frames.reshape((steps + 1,) + start.shape)


def _pixel_blocks(size: int, grid: int) -> np.ndarray:
    """For each pixel (row-major), the index of its cell in a grid x grid partition."""
    block_of_row = np.arange(size) * grid // size
    return (block_of_row[:, np.newaxis] * grid + block_of_row[np.newaxis, :]).ravel()


def block_order(block_scores: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices of a size x size image, block by block from the highest score down.

    Whole blocks are removed or restored, not scattered pixels: salt-and-pepper noise is far
    from any training image and would drop the probability whatever the order. Ties (ReLU
    zeros) are broken at random.
    """
    grid = block_scores.shape[0]
    pixel_block = _pixel_blocks(size, grid)
    rank = np.empty(grid * grid, dtype=np.int64)
    rank[np.lexsort((rng.random(grid * grid), -block_scores.ravel()))] = np.arange(grid * grid)
    return np.argsort(rank[pixel_block], kind="stable")


def block_means(heatmap: np.ndarray, grid: int) -> np.ndarray:
    """Mean heat in each cell of a grid x grid partition of the map."""
    size = heatmap.shape[0]
    pixel_block = _pixel_blocks(size, grid)
    sums = np.bincount(pixel_block, weights=heatmap.ravel(), minlength=grid * grid)
    return (sums / np.bincount(pixel_block, minlength=grid * grid)).reshape(grid, grid)


def deletion_insertion(predict: Predict, image: np.ndarray, heatmap: np.ndarray,
                       class_id: int, steps: int, seed: int = 0) -> Curves:
    """All four curves of one image, predicted in one batch.

    Each curve starts or ends at the image itself, the black image or the blurred copy, so
    those three are predicted once: 4 * (steps - 1) + 3 images instead of 4 * (steps + 1),
    the forward passes being nearly all of the GradCam component's time."""
    rng = np.random.default_rng(seed)
    size = image.shape[0]
    black = np.zeros_like(image)
    blurred = ndimage.gaussian_filter(image, sigma=(INSERTION_BLUR_SIGMA * size,) * 2 + (0,))
    grid = min(BLOCK_GRID, size)
    salient = block_order(block_means(heatmap, grid), size, rng)
    shuffled = block_order(rng.random((grid, grid)), size, rng)
    walks = ((image, black, salient), (blurred, image, salient),
             (image, black, shuffled), (blurred, image, shuffled))
    scores = predict(np.concatenate([np.stack([image, black, blurred])] + [
        _reveal(start, source, order, steps)[1:-1] for start, source, order in walks]))
    whole, dark, blur = scores[:3, class_id]
    ends = ((whole, dark), (blur, whole), (whole, dark), (blur, whole))
    return Curves(*(np.concatenate([[first], middle, [last]]) for (first, last), middle
                    in zip(ends, scores[3:, class_id].reshape(4, steps - 1))))
