"""The train stage: LoRA fine-tuning on chat data and continued pre-training on text.

    from kifabrik.train import TrainOptions, train, resume
    adapter = train(ws, "smollm2-135m-instruct", ["handbuch"], TrainOptions(max_steps=100))

Built on the transformers Trainer and PEFT; see `runner.py` for what kifabrik adds.
Importing this package does not import torch.
"""

from kifabrik.train.api import resume, train
from kifabrik.train.options import LoraOptions, TrainOptions

__all__ = ["LoraOptions", "TrainOptions", "resume", "train"]
