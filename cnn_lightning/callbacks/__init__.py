"""Lightning callbacks that make TensorBoard explain a training run, not just plot its loss.

Each callback is switched on or off in ``conf/callbacks/`` and writes to every TensorBoard logger
of the trainer (none: it does nothing). Images, text and histograms are written on global rank 0
only; whatever needs data from every process (the worst misclassified digits, the confusion
matrix) is gathered with collectives that every rank calls, so DDP neither deadlocks nor shows a
single shard.

Tags (all prefixed so that TensorBoard groups them):
    perf/images_per_sec, perf/images_per_sec_epoch, perf/epoch_time_s   ImagesPerSecond
    hp/params, hp/val_acc_best, hp/test_acc + the HPARAMS tab               HParamsSummary
    inputs/train_augmented                                                  AugmentedInputs
    val/misclassified (image + text)                                        MisclassifiedDigits
    test/confusion_matrix (image + text)                                    ConfusionMatrix
    feature_maps/NN_<layer>                                                 FeatureMaps
    kernels/<first conv>                                                    FirstConvKernels
    weights/<param>, grads/<param>                                          Histograms
    model/summary (text)                                                    LayerSummary
    the GRAPHS tab                                                          ModelGraph
    the PROJECTOR tab: embedding/penultimate                                Embedding
"""

from cnn_lightning.callbacks.digits import AugmentedInputs, ConfusionMatrix, MisclassifiedDigits
from cnn_lightning.callbacks.embedding import Embedding
from cnn_lightning.callbacks.network import FeatureMaps, FirstConvKernels, Histograms, ModelGraph
from cnn_lightning.callbacks.scalars import HParamsSummary, ImagesPerSecond, LayerSummary

__all__ = [
    "AugmentedInputs", "ConfusionMatrix", "Embedding", "FeatureMaps", "FirstConvKernels", "HParamsSummary", "Histograms",
    "ImagesPerSecond", "LayerSummary", "MisclassifiedDigits", "ModelGraph",
]
