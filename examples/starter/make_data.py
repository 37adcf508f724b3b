"""Write the example data: three interleaved spirals, 2-D points, seeded (python make_data.py [FOLDER])."""

from __future__ import annotations

import csv
import math
import random
import sys
from pathlib import Path

SIZES = {"train": 1200, "val": 300, "test": 300}


def spiral_points(n: int, rng: random.Random, classes: int = 3, noise: float = 0.25) -> list[tuple[float, float, int]]:
    """``n`` points ``(x, y, label)``: arms of a spiral, one per class, with Gaussian noise."""
    points = []
    for _ in range(n):
        label = rng.randrange(classes)
        radius = rng.random()
        angle = 4.0 * radius + label * 2 * math.pi / classes + rng.gauss(0.0, noise)
        points.append((round(radius * math.cos(angle), 5), round(radius * math.sin(angle), 5), label))
    return points


def main(folder: Path) -> None:
    """Write train.csv, val.csv and test.csv into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for split, n in SIZES.items():
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x1", "x2", "label"])
            writer.writerows(spiral_points(n, rng))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
