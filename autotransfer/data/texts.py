"""Text-folder datasets (one .txt file per example, the BBC-news layout)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .dataset import Dataset
from .folders import IMAGE_EXTS, TEXT_EXTS, count_exts, scan_class_folders
from .splits import assemble


def looks_like_text_folder(root: Path) -> bool:
    if not root.is_dir():
        return False
    counts = count_exts(root)
    n_img = sum(v for k, v in counts.items() if k in IMAGE_EXTS)
    return counts.get(".txt", 0) > n_img  # a few notes among images do not make a text dataset


def load_text_folder(root: Path, options: dict) -> Dataset:
    warnings: list[str] = []
    replaced: list[str] = []
    empty: list[str] = []

    def read(path: Path):
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            replaced.append(path.name)
        text = text.strip()
        if not text:
            empty.append(path.name)
            return None
        return text, hashlib.sha256(data).hexdigest()

    records = scan_class_folders(root, TEXT_EXTS, read, "text", warnings)
    if replaced:
        warnings.append(
            f"{len(replaced)} text file(s) are not valid UTF-8; decoded with replacement (e.g. {', '.join(replaced[:3])})"
        )
    if empty:
        # the generic "unreadable" warning above already counts them; say why
        warnings.append(f"{len(empty)} empty text file(s) among the skipped (e.g. {', '.join(empty[:3])})")
    return assemble(
        name=root.resolve().name, path=str(root), modality="text", records=records,
        task_names=["label"], options=options, warnings=warnings,
    )
