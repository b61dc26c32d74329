"""The one training loop, used by every strategy and by the search.

``train(dataset, source, strategy, ...)`` builds a ``TransferModel`` (shared backbone, one
linear head per task), asks the strategy for its stages, and runs ``fit`` once per stage:
AdamW, linear warm-up then cosine decay (driven by training progress, so a batch-size change
does not bend it), gradient clipping at 1.0, autocast at the run's precision on CUDA only
(``autotransfer.precision``; fp16 with a gradient scaler), an evaluation on the
validation split after every epoch followed by ``report(epoch, val_score)`` (return True or
raise ``StopTraining`` to stop: the pruner's hook), and the kept epoch's weights restored at the
end (``kept_epoch``: the latest epoch within one standard error of the best validation score).
Cached-feature stages run the same loop over a feature matrix instead of items.

Reproducible on CPU: the seed fixes the backbone's random init, the heads, every epoch's
shuffle (a generator seeded from seed, stage name and epoch, so an OOM retry replays the same
order) and augmentation; loading runs in the main process on CPU (``num_workers=0``), in one
loader process per core on CUDA. Images come from the decoded-image cache
(``autotransfer.decode_cache``) when the source supports it: decoded once, then every epoch
centre-crops the cached arrays a batch at a time, or augments them: a batch at a time through
the source's ``decoded_augmentation`` (``autotransfer.augment``: its random draws come from a
generator seeded by seed, stage and epoch; on CUDA the next batch's crops are prepared while the
card trains), else per image through ``load_decoded``.

Out of memory on CUDA: the epoch is retried with half the batch size, up to 3 times per stage,
then an ``AutotransferError`` says what to change. Any exception that ``is_oom`` recognises
triggers it, so a test double can raise ``torch.cuda.OutOfMemoryError`` on CPU.
"""

from __future__ import annotations

from ..monitor import StopTraining
from .fit import fit, kept_epoch, lr_factor, standard_error
from .loop import _Loop, _Split, auto_batch_size
from .oom import is_oom
from .result import TrainResult
from .run import auto_augment, train
from .seeding import seed_everything
from .solve import solve_probe
from .standardize import fold_standardizer, standardizer

__all__ = ["StopTraining", "TrainResult", "_Loop", "_Split", "auto_augment", "auto_batch_size", "fit",
           "fold_standardizer", "is_oom", "kept_epoch", "lr_factor", "seed_everything", "solve_probe",
           "standard_error", "standardizer", "train"]
