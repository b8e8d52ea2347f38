"""The run log: ``DIR/log.csv`` (one row per logged step), mirrored to TensorBoard when installed."""

from __future__ import annotations

import csv
from pathlib import Path

LOG_FILE = "log.csv"
LOG_COLUMNS = ("step", "epoch", "lr", "loss", "val_loss", "val_nll", "seconds")


class CsvLog:
    """Appends rows to ``path``; on resume keeps the rows up to ``keep_until`` and drops later ones."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        rows = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            pass

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS).writerow({k: row.get(k, "") for k in LOG_COLUMNS})
        if self.tb is not None:
            for key in ("lr", "loss", "val_loss", "val_nll"):
                if row.get(key) not in (None, ""):
                    self.tb.add_scalar(key, float(row[key]), int(row["step"]))
