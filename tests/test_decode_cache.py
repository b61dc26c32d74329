"""The decoded-image cache: one decode per image across sources and epochs, identical numbers,
invalidation, corruption, the size bound, and ``--precision``."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_sources import save_timm
from PIL import Image, ImageFile

from autotransfer import decode_cache
from autotransfer._rank import rank_sources
from autotransfer._train import train
from autotransfer.datasets import load
from autotransfer.errors import AutotransferError
from autotransfer.features import cache_key, extract
from autotransfer.precision import check_precision, resolve_precision
from autotransfer.sources import resolve_source

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ("test_efficientnet", "test_resnet", "test_efficientnet")  # K = 3 sources, one input geometry


def write_photos(folder: Path, per_class: int = 10, seed: int = 0) -> Path:
    """Real JPEGs: random crops (40-90 px wide) of sklearn's two sample photos, one class each."""
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(("china.jpg", "flower.jpg")):
        photo = load_sample_image(name)
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 90)), int(rng.integers(30, 70))
            y, x = int(rng.integers(0, photo.shape[0] - h)), int(rng.integers(0, photo.shape[1] - w))
            Image.fromarray(photo[y:y + h, x:x + w]).save(folder / f"c{c}" / f"{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos") / "photos")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w")
    out = []
    for k, arch in enumerate(ARCHS):
        path = folder / f"{arch}-{k}.safetensors"
        save_timm(arch, path, num_classes=3, seed=k)
        out.append(resolve_source(f"timm:{arch}@{path}?size=32&interpolation=bilinear"))
    return out


@pytest.fixture()
def decodes(monkeypatch):
    """Count full decodes of image files (``ImageFile.load`` with tiles left) per file name, in this process.

    The cache decodes in threads of this process, so every decode is seen (two threads here,
    whatever the machine). The data layer's validation pass (each file's bytes decoded once at
    1/8 scale from memory, when the dataset is loaded) has no file name and is not counted: it is
    the same with or without the cache.
    """
    counts: collections.Counter = collections.Counter()
    original = ImageFile.ImageFile.load
    lock = threading.Lock()

    def counted(self):
        if self.tile and self.filename:  # tiles left: this call decodes the file
            with lock:
                counts[_name(self.filename)] += 1
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted)
    monkeypatch.setattr(decode_cache, "default_workers", lambda: 2)
    return counts


def _name(path) -> str:
    return f"{Path(path).parent.name}/{Path(path).name}"  # class folder / file


def test_one_decode_per_image_across_sources_and_epochs(photos, sources, decodes, tmp_path):
    ds = load(str(photos))
    rows = rank_sources(ds, sources, ["logme"], device="cpu", cache_dir=tmp_path, progress=False)
    assert len(rows) == len(ARCHS)
    train_names = {_name(ds.items[i]) for i in ds.splits["train"]}
    assert {n: decodes[n] for n in train_names} == {n: 1 for n in train_names}  # K sources, one decode
    for source in sources[:2]:
        result = train(ds, source, "full", epochs=2, device="cpu", cache_dir=tmp_path, augment=True,
                       batch_size=8, evaluate_test=True)
        assert result.epochs_run == 2 and result.params["precision"] == "fp32"
    # every image of every split decoded exactly once: train during ranking, val and test at the first train
    assert dict(decodes) == {_name(p): 1 for p in ds.items}
    assert len(list((tmp_path / "images").glob("*.npy"))) == 3  # train, val, test; shared by all sources


def test_without_the_cache_each_source_decodes_again(photos, sources, decodes, tmp_path, monkeypatch):
    """Today's behaviour, kept as the fallback: the counter sees K decodes per image."""
    monkeypatch.setenv(decode_cache.MAX_GB_ENV, "0")
    monkeypatch.setattr(decode_cache, "default_workers", lambda: 0)  # loader processes would hide their decodes
    ds = load(str(photos))
    rank_sources(ds, sources, ["logme"], device="cpu", cache_dir=tmp_path, progress=False)
    train_names = {_name(ds.items[i]) for i in ds.splits["train"]}
    assert {n: decodes[n] for n in train_names} == {n: len(ARCHS) for n in train_names}
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("query", ["size=32", "size=32&crop_pct=0.9", "size=31&crop_pct=0.875&interpolation=bicubic"])
def test_features_from_the_cache_equal_features_from_the_files(photos, tmp_path, query):
    """Bit for bit, including centre crops whose offsets round (odd margins)."""
    ds = load(str(photos))
    path = tmp_path / "w.safetensors"
    save_timm("test_efficientnet", path, num_classes=3)
    src = resolve_source(f"timm:test_efficientnet@{path}?{query}")
    assert src.decode_spec() is not None
    files = extract(src, ds, "val", device="cpu", cache_dir=False, progress=False, num_workers=0)
    cached = extract(src, ds, "val", device="cpu", cache_dir=tmp_path, progress=False, num_workers=0)
    assert list((tmp_path / "images").glob("val__*.npy"))
    assert np.array_equal(files.features, cached.features)
    assert np.array_equal(files.source_probs, cached.source_probs)


def test_training_on_the_cache_equals_training_on_the_files(photos, sources, tmp_path):
    """Without augmentation the batches are identical, so the runs are: same curve, same predictions."""
    ds = load(str(photos))
    kw = dict(epochs=2, device="cpu", augment=False, batch_size=8, seed=3)
    files = train(ds, sources[1], "full", cache_dir=False, **kw)
    cached = train(ds, sources[1], "full", cache_dir=tmp_path, **kw)
    assert list((tmp_path / "images").glob("train__*.npy"))
    assert files.val_curve == cached.val_curve and files.test_score == cached.test_score
    items = ds.split_items("test")
    p_files, p_cached = files.predict(items)[1][0], cached.predict(items)[1][0]
    np.testing.assert_array_equal(p_files, p_cached)


def test_augmented_epochs_read_the_cache_and_stay_reproducible(photos, sources, tmp_path):
    ds = load(str(photos))
    kw = dict(epochs=2, device="cpu", augment=True, batch_size=8, seed=1, cache_dir=tmp_path)
    a, b = train(ds, sources[0], "full", **kw), train(ds, sources[0], "full", **kw)
    assert a.val_curve == b.val_curve
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=False):
        assert torch.equal(x, y)


def test_a_changed_file_is_decoded_again(tmp_path, sources, decodes):
    folder = write_photos(tmp_path / "data", per_class=6)
    ds = load(str(folder))
    first = extract(sources[0], ds, "train", device="cpu", cache_dir=tmp_path / "c", progress=False)
    assert sum(decodes.values()) == len(ds.splits["train"])
    target = Path(ds.items[int(ds.splits["train"][0])])
    Image.open(target).transpose(Image.Transpose.ROTATE_180).save(target, quality=90)
    decodes.clear()
    changed = load(str(folder))
    assert changed.fingerprint != ds.fingerprint
    again = extract(sources[0], changed, "train", device="cpu", cache_dir=tmp_path / "c", progress=False)
    assert sum(decodes.values()) == len(changed.splits["train"])  # a new key: the split decoded afresh
    row = changed.split_items("train").index(str(target)) if str(target) in changed.split_items("train") else None
    assert row is not None and not np.array_equal(first.features[row], again.features[row])
    assert len(list((tmp_path / "c" / "images").glob("train__*.npy"))) == 2


def _only_decoded(ds, src, cache: Path):
    """Fetch the decoded split directly (features would otherwise come from the feature cache)."""
    return decode_cache.decoded(ds, "val", src.decode_spec(), cache_dir=cache, num_workers=0)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tampered", "no_meta"])
def test_a_corrupt_cache_file_is_decoded_again_with_one_warning(damage, photos, sources, tmp_path, capsys):
    ds = load(str(photos))
    first = _only_decoded(ds, sources[0], tmp_path)
    reference = np.array([first[i] for i in range(len(first))])
    npy = first.path
    raw = npy.read_bytes()
    if damage == "truncate":
        npy.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        npy.write_bytes(b"not an npy file")
    elif damage == "tampered":  # a well-formed file whose pixels changed: caught by the checksum
        arr = np.load(npy)
        arr[0, 0, 0, 0] ^= 0xFF
        np.save(npy, arr)
    else:
        npy.with_suffix(".json").unlink()
    capsys.readouterr()
    again = _only_decoded(ds, sources[0], tmp_path)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: decoded-image cache file") and "decoding again" in err[0]
    assert np.array_equal(np.array([again[i] for i in range(len(again))]), reference)
    capsys.readouterr()
    assert _only_decoded(ds, sources[0], tmp_path) is not None and capsys.readouterr().err == ""
    assert sorted(p.suffix for p in (tmp_path / "images").iterdir()) == [".json", ".npy"]  # no temp files


def test_a_split_over_the_size_bound_streams_with_one_note(photos, sources, tmp_path, monkeypatch, capsys):
    ds = load(str(photos))
    monkeypatch.setenv(decode_cache.MAX_GB_ENV, "0.000001")  # 1 kB: less than one split
    got = extract(sources[0], ds, "val", device="cpu", cache_dir=tmp_path, progress=False, num_workers=0)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and decode_cache.MAX_GB_ENV in err[0] and "reading the image files instead" in err[0]
    assert not (tmp_path / "images").exists()
    monkeypatch.delenv(decode_cache.MAX_GB_ENV)
    files = extract(sources[0], ds, "val", device="cpu", cache_dir=False, progress=False, num_workers=0)
    assert np.array_equal(got.features, files.features)
    monkeypatch.setenv(decode_cache.MAX_GB_ENV, "lots")
    with pytest.raises(AutotransferError, match="AUTOTRANSFER_DECODE_CACHE_MAX_GB='lots' is not a number"):
        decode_cache.max_bytes(tmp_path)


def test_decoded_images_pickle_as_their_path(photos, sources, tmp_path):
    import pickle

    images = _only_decoded(load(str(photos)), sources[0], tmp_path)
    first = images[0].copy()
    blob = pickle.dumps(images)
    assert len(blob) < 1000  # the path, not the pixels: loader workers map the file themselves
    assert np.array_equal(pickle.loads(blob)[0], first)


def test_text_sources_have_no_decode_spec(tmp_path):
    from helpers_sources import save_tiny_bert

    assert resolve_source(f"hf:{save_tiny_bert(tmp_path / 'bert')}").decode_spec() is None


# --- precision ---


def test_precision_choices_and_cpu_rules():
    cpu = torch.device("cpu")
    assert check_precision(" BF16 ") == "bf16"
    with pytest.raises(AutotransferError, match="precision 'fp64' is not one of auto, bf16, fp16, fp32"):
        check_precision("fp64")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("fp32", cpu) == "fp32"
    for p in ("bf16", "fp16"):
        with pytest.raises(AutotransferError, match=f"precision '{p}' needs a CUDA device.*--precision fp32"):
            resolve_precision(p, cpu)


def test_auto_precision_follows_the_cards_capability(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    assert resolve_precision("auto", cuda) == "fp16"


def test_features_are_cached_per_precision(photos, sources):
    ds = load(str(photos))
    assert cache_key(sources[0], ds, "val", "fp32") != cache_key(sources[0], ds, "val", "bf16")
    with pytest.raises(AutotransferError, match="precision 'bf16' needs a CUDA device"):
        extract(sources[0], ds, "val", device="cpu", precision="bf16", cache_dir=False, progress=False)
    with pytest.raises(AutotransferError, match="precision 'fp16' needs a CUDA device"):
        train(ds, sources[0], "linear_probe", device="cpu", precision="fp16", cache_dir=False)


@pytest.mark.parametrize("command", ["rank", "search", "train"])
def test_cli_precision_is_validated_in_one_line(cli, photos, command):
    res = cli(command, "--data", str(photos), "--device", "cpu", "--precision", "fp16",
              *(["--source", "efficientnet-lite0"] if command == "train" else []))
    assert res.code != 0
    assert res.err_lines == [("error: precision 'fp16' needs a CUDA device but this run is on cpu; "
                              "use --precision fp32 (or auto) on CPU")], res.err
    bad = cli(command, "--data", str(photos), "--precision", "fp64",
              *(["--source", "efficientnet-lite0"] if command == "train" else []))
    assert bad.code != 0 and bad.err_lines == [("error: precision 'fp64' is not one of auto, bf16, fp16, fp32; "
                                               "use --precision auto to pick the fastest the device supports")]


def test_cli_train_records_precision_and_uses_the_cache(cli, photos, sources, tmp_path):
    res = cli("train", "--data", str(photos), "--source", sources[1].spec, "--strategy", "full", "--epochs", "1",
              "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "model"))
    assert res.code == 0, res.err[-2000:]
    assert "(precision fp32," in res.out and (tmp_path / "model" / "config.json").is_file()
    assert '"precision": "fp32"' in (tmp_path / "model" / "result.json").read_text()
    assert len(list((tmp_path / "c" / "images").glob("*.npy"))) == 3


@pytest.mark.parametrize("query", ["size=32", "size=31&crop_pct=0.875&interpolation=bicubic"])
def test_batches_from_the_cache_are_the_per_image_path_bit_for_bit_on_cpu(photos, tmp_path, query):
    """The batched path (each batch one slice of the memory-mapped uint8 crops, normalised at once)
    gives exactly the per-image path's features on CPU; odd crop margins included."""
    from autotransfer.features import _compute

    ds = load(str(photos))
    path = tmp_path / "w.safetensors"
    save_timm("test_efficientnet", path, num_classes=3)
    src = resolve_source(f"timm:test_efficientnet@{path}?{query}")
    images = decode_cache.decoded(ds, "val", src.decode_spec(), cache_dir=tmp_path)
    items = ds.split_items("val")
    common = dict(device="cpu", batch_size=4, num_workers=0, progress=False, desc="", images=images)
    per_image, probs = _compute(src, items, cached_batches=False, **common)
    batched, bprobs = _compute(src, items, **common)  # the default when the split is cached
    assert batched.shape == per_image.shape == (len(items), src.feature_dim)
    np.testing.assert_array_equal(batched, per_image)
    np.testing.assert_array_equal(bprobs, probs)
    assert not np.array_equal(per_image[0], per_image[1])  # real, distinct images


def test_a_timm_training_transform_becomes_its_batch_augmentation(tmp_path):
    from autotransfer_plugins.sources.timm_source import _batch_augmentation
    from torchvision import transforms as T

    path = tmp_path / "w.safetensors"
    save_timm("test_efficientnet", path, num_classes=3)
    big = resolve_source(f"timm:test_efficientnet@{path}?size=96")
    aug, steps = big.decoded_augmentation(), big._transform(True).transforms
    assert aug.size == (96, 96) and aug.scale == tuple(steps[0].scale) and aug.interpolations == ("bicubic",)
    assert aug.hflip == 0.5 and aug.brightness == aug.contrast == aug.saturation == (0.6, 1.4)
    np.testing.assert_allclose(aug.mean, steps[-1].mean.tolist())
    np.testing.assert_allclose(aug.std, steps[-1].std.tolist())
    tiny = resolve_source(f"timm:test_efficientnet@{path}?size=32").decoded_augmentation()
    assert tiny.hflip == 0.0 and tiny.scale == (0.5, 1.0)  # tiny images: no flip, milder crops
    # what the batch form does not have runs per image
    tail = [T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]
    assert _batch_augmentation([T.RandomResizedCrop(32), T.ColorJitter(0.4, 0.4, 0.4, 0.1), *tail]) is None
    assert _batch_augmentation([T.RandomResizedCrop(32), T.RandomVerticalFlip(), *tail]) is None
    assert _batch_augmentation([T.Resize(32), T.CenterCrop(32), *tail]) is None
    assert _batch_augmentation([T.RandomResizedCrop(32), *tail]).jitter == []


def test_augmented_epochs_augment_whole_batches(photos, sources, tmp_path, monkeypatch):
    """With the cache, training images never go through the per-image path: one call per batch."""
    ds = load(str(photos))
    src = sources[0]
    calls = []
    real = src.decoded_augmentation()

    def counted(images, index, rng, device):
        calls.append(len(index))
        return real(images, index, rng, device)

    def per_image(image, train=False):
        assert not train, "an augmented training image went through load_decoded"
        return type(src).load_decoded(src, image, train)

    monkeypatch.setattr(src, "decoded_augmentation", lambda: counted)
    monkeypatch.setattr(src, "load_decoded", per_image)
    result = train(ds, src, "full", epochs=2, device="cpu", augment=True, batch_size=4, cache_dir=tmp_path)
    n = len(ds.splits["train"])
    assert result.epochs_run == 2 and sum(calls) == 2 * n and max(calls) == 4


def test_preparing_batches_ahead_gives_the_same_run(photos, sources, tmp_path, monkeypatch):
    """The look-ahead (used on CUDA) draws in batch order on one thread: the run is the same."""
    from autotransfer import _train

    ds = load(str(photos))
    kw = dict(epochs=2, device="cpu", augment=True, batch_size=4, seed=2, cache_dir=tmp_path)
    plain = train(ds, sources[0], "full", **kw)
    monkeypatch.setattr(_train._Loop, "look_ahead", True)
    monkeypatch.setattr(_train._Loop, "_collate", None)  # not the per-image path either
    ahead = train(ds, sources[0], "full", **{**kw, "num_workers": 2})
    assert plain.val_curve == ahead.val_curve
    for x, y in zip(plain.model.state_dict().values(), ahead.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
