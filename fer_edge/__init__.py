"""fer-edge: facial expression recognition for Raspberry Pi + Coral Edge TPU."""

__version__ = "0.1.0"
