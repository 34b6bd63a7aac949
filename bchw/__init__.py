"""bchw: BinaryConnect networks from PyTorch training to verified hardware."""

__version__ = "0.1.0"
