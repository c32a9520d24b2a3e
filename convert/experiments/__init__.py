"""Experiments that shaped the shipped models but are not part of the pipeline.

- ``qat``: quantization-aware fine-tuning (``python -m convert.experiments.qat``); it did not beat
  post-training quantization, so no shipped model uses it.
- ``soup``: greedy weight averaging of fine-tuned models (``python -m convert.experiments.soup``);
  it raised float accuracy but lowered int8 accuracy, so no soup is shipped.

Kept runnable (and tested) so the measurements in the docs can be reproduced; nothing outside this
package imports them.
"""
