"""The weight-sharing supernet: data, training, checkpoints and accuracy scoring.

``data`` (the corpus and its split), ``recipe`` (a training recipe), ``step`` (one
optimiser step: the sandwich rule and distillation), ``loop`` (the loop both trainings
share), ``train`` (supernet training and loading), ``standalone`` (one architecture
trained alone), ``checkpoint`` (what a checkpoint holds), ``score`` (validation loss of
an architecture with inherited weights), ``distributed`` (training on several GPUs under
``torchrun``). The network itself is :mod:`nas.model`.
"""
