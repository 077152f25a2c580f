"""tapline: cloud-edge monitoring and remote control of secondary water supply pump rooms."""

__version__ = "0.1.0"
