"""htcsim: one compiled scheduling kernel for trace replay and live HTC clusters."""

__version__ = "0.1.0"
