"""Build a tiny ECAPA-TDNN checkpoint in the layout of `speechbrain/spkrec-ecapa-voxceleb`.

Same files, same hyperparams structure (including the upstream `pretrained_path` hub id,
which the loader must override), just small channel counts and random weights, so tests
can prove the offline loading path, shapes and scoring in a second or two.
"""

from __future__ import annotations

from pathlib import Path

import torch

HPARAMS = """\
# Same structure as speechbrain/spkrec-ecapa-voxceleb, with tiny channel counts.
n_mels: 80
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
out_n_neurons: {n_classes}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [16, 16, 16, 16, 48]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 8
    se_channels: 8
    lin_neurons: {dim}

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {dim}
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""

DIM = 24
N_CLASSES = 4


def build_tiny_ecapa(folder: Path, seed: int = 0) -> Path:
    """Write the five model files into `folder` (created) and return it."""
    from purchase_guard.voice._speechbrain_compat import ensure_torchaudio

    ensure_torchaudio()
    from speechbrain.dataio.encoder import CategoricalEncoder
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ECAPA_TDNN(
        80,
        channels=[16, 16, 16, 16, 48],
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=8,
        se_channels=8,
        lin_neurons=DIM,
    )
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(Classifier(DIM, out_neurons=N_CLASSES).state_dict(), folder / "classifier.ckpt")
    norm = InputNormalization(norm_type="global", std_norm=False)
    # One forward pass in training mode gives the global statistics real values.
    norm.train()
    norm(torch.randn(8, 1, DIM), torch.ones(8))
    norm._save(folder / "mean_var_norm_emb.ckpt")
    labels = CategoricalEncoder()
    labels.update_from_iterable([f"id{k:05d}" for k in range(N_CLASSES)])
    labels.save(folder / "label_encoder.txt")
    (folder / "hyperparams.yaml").write_text(HPARAMS.format(dim=DIM, n_classes=N_CLASSES), "utf-8")
    return folder
