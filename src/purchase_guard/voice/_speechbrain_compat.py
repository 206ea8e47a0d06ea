"""The one place that makes `import speechbrain` work without a usable torchaudio.

Why: SpeechBrain imports torchaudio at import time (`speechbrain.dataio.dataio` ->
`speechbrain.utils.torch_audio_backend`, and `speechbrain.inference.classifiers`). The
torchaudio wheel on PyPI is built against a CUDA torch and fails to load beside our pinned
CPU torch (or is simply not installed, since it would try to replace torch). Nothing we call
needs it: we decode and resample audio ourselves (voice/audio.py) and hand SpeechBrain 16 kHz
float tensors, and the ECAPA path (Fbank from `speechbrain.processing.features`, the ECAPA_TDNN
network, InputNormalization, the CategoricalEncoder) is pure torch.

What SpeechBrain touches on that path: the module object itself, and `torchaudio.__version__`
(parsed by `check_torchaudio_backend`, which then only logs). The stub reports version
"2.9.0" so that check takes its quiet "handled by torchcodec" branch. Any other attribute,
e.g. `torchaudio.transforms.Resample` in `EncoderClassifier.load_audio` (which we never call),
raises an AttributeError that says why, instead of failing somewhere obscure.

The stub is installed only if a real torchaudio cannot be imported, and only into
`sys.modules`; it never shadows a working installation.

SpeechBrain also registers optional integrations (k2, etc.) as lazy modules in `sys.modules`
that raise ImportError when any attribute is touched. Tools that walk `sys.modules` (Hypothesis
does, to collect constants) then crash. Those integrations are never used here, so the lazy
placeholders are dropped from `sys.modules` right after the import.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import threading
import types

STUB_VERSION = "2.9.0"
_lock = threading.Lock()


class _TorchaudioStub(types.ModuleType):
    """Module stand-in: a version string and a clear error for everything else."""

    __version__ = STUB_VERSION
    is_purchase_guard_stub = True

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        # AttributeError (not ImportError) so `hasattr` probes in SpeechBrain answer False.
        raise AttributeError(
            f"torchaudio.{name} is unavailable: purchase-guard runs SpeechBrain with a stub "
            "torchaudio (see purchase_guard.voice._speechbrain_compat); decode and resample "
            "audio with purchase_guard.voice.audio instead"
        )


def ensure_torchaudio() -> bool:
    """Make `import torchaudio` succeed; True when the stub had to be installed."""
    with _lock:
        current = sys.modules.get("torchaudio")
        if current is not None:
            return bool(getattr(current, "is_purchase_guard_stub", False))
        try:
            importlib.import_module("torchaudio")
        except (ImportError, OSError, RuntimeError):
            # ImportError: not installed. OSError/RuntimeError: a CUDA build whose native
            # library does not load against the CPU torch.
            sys.modules.pop("torchaudio", None)
            stub = _TorchaudioStub("torchaudio", "stub installed by purchase_guard (see module docs)")
            stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", loader=None)
            sys.modules["torchaudio"] = stub
            return True
        return False


def import_encoder_classifier() -> type:
    """`speechbrain.inference.speaker.EncoderClassifier`, importable without torchaudio."""
    ensure_torchaudio()
    from speechbrain.inference.speaker import EncoderClassifier

    _drop_unloadable_lazy_modules()
    cls: type = EncoderClassifier
    return cls


def _drop_unloadable_lazy_modules() -> None:
    # Dropped without touching them: touching one either fails (missing optional dependency)
    # or warns (a deprecated alias such as speechbrain.pretrained). SpeechBrain's own code
    # imports the real modules by name, which still works.
    for name, module in list(sys.modules.items()):
        if name.startswith("speechbrain") and type(module).__name__ in (
            "LazyModule",
            "DeprecatedModuleRedirect",
        ):
            sys.modules.pop(name, None)
